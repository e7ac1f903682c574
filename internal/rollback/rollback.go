// Package rollback undoes a multi-step setup that failed part way: each
// step that made something registers its undo, and the whole is either
// kept or undone, last step first.
//
//	var undo rollback.Stack
//	defer undo.Run() // does nothing once released
//	... make something; undo.Add(func() { remove it }) ...
//	undo.Release() // success: keep everything
package rollback

// Stack is a stack of undo steps; its zero value is empty.
type Stack struct{ fns []func() }

// Add registers the undo of a step just done.
func (s *Stack) Add(f func()) { s.fns = append(s.fns, f) }

// Run undoes every registered step, last first, and empties the stack.
func (s *Stack) Run() {
	for i := len(s.fns) - 1; i >= 0; i-- {
		s.fns[i]()
	}
	s.fns = nil
}

// Release keeps what the steps made: a later Run does nothing.
func (s *Stack) Release() { s.fns = nil }
