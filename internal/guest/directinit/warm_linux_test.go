package directinit

import (
	"reflect"
	"testing"
)

// The warm config sets every field of Config (slices not empty), so that
// a warm first step decodes each kind of value a real one does; a field
// added to Config without a value here fails.
func TestWarmConfigSetsEveryField(t *testing.T) {
	v := reflect.ValueOf(warmConfig()).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if !f.IsExported() || f.Tag.Get("json") == "-" {
			continue
		}
		if fv := v.Field(i); fv.IsZero() || fv.Kind() == reflect.Slice && fv.Len() == 0 {
			t.Errorf("Config.%s is not set", f.Name)
		}
	}
	if err := warm(); err != nil {
		t.Fatal(err)
	}
}
