package directinit

import (
	"reflect"
	"testing"
)

// The warm config sets every field of Config (and of the structs it
// points to), so that a warm first step decodes each kind of value a real
// one does; a field added to Config without a value here fails.
func TestWarmConfigSetsEveryField(t *testing.T) {
	var check func(path string, v reflect.Value)
	check = func(path string, v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() {
				t.Errorf("%s is nil", path)
				return
			}
			check(path, v.Elem())
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				f := v.Type().Field(i)
				if !f.IsExported() || f.Tag.Get("json") == "-" {
					continue
				}
				if path == "" && v.Field(i).IsZero() {
					t.Errorf("Config.%s is not set", f.Name)
					continue
				}
				if path == "" {
					check(f.Name, v.Field(i))
				}
			}
		case reflect.Slice:
			if v.Len() == 0 {
				t.Errorf("%s is empty", path)
			}
		}
	}
	check("", reflect.ValueOf(warmConfig()))
	if err := warm(); err != nil {
		t.Fatal(err)
	}
}
