package rollback

import (
	"slices"
	"testing"
)

func TestStack(t *testing.T) {
	var got []int
	step := func(i int) func() { return func() { got = append(got, i) } }

	var s Stack
	s.Add(step(1))
	s.Add(step(2))
	s.Add(step(3))
	s.Run()
	s.Run() // once only
	if !slices.Equal(got, []int{3, 2, 1}) {
		t.Fatalf("undone %v, want 3 2 1", got)
	}

	got = nil
	var kept Stack
	kept.Add(step(1))
	kept.Release()
	kept.Run()
	if len(got) != 0 {
		t.Fatalf("released steps undone: %v", got)
	}
}
