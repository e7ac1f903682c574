package shim

import (
	eventsapi "github.com/containerd/containerd/api/events"
)

// Event topics, as containerd names them.
const (
	topicCreate      = "/tasks/create"
	topicStart       = "/tasks/start"
	topicExit        = "/tasks/exit"
	topicDelete      = "/tasks/delete"
	topicExecAdded   = "/tasks/exec-added"
	topicExecStarted = "/tasks/exec-started"
	topicPaused      = "/tasks/paused"
	topicResumed     = "/tasks/resumed"
	topicOOM         = "/tasks/oom"
)

// The event messages are containerd's own.
type (
	eventCreate      = eventsapi.TaskCreate
	eventStart       = eventsapi.TaskStart
	eventExit        = eventsapi.TaskExit
	eventDelete      = eventsapi.TaskDelete
	eventExecAdded   = eventsapi.TaskExecAdded
	eventExecStarted = eventsapi.TaskExecStarted
	eventPaused      = eventsapi.TaskPaused
	eventOOM         = eventsapi.TaskOOM
)
