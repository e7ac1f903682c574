// Package agentv1 is version 1 of the host <-> guest agent API: the protobuf
// messages and ttrpc services in agent.proto and the code generated from it.
//
// Regenerate with `make generate` after editing agent.proto.
package agentv1

// APIVersion is the API version both sides of this package speak.
const APIVersion = 1
