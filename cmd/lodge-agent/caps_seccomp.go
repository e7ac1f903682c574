//go:build seccomp

package main

import agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"

var capabilities = []string{agentv1.CapCgroup2, agentv1.CapSeccomp, agentv1.CapIdentify, agentv1.CapLayers, agentv1.CapPodHolder, agentv1.CapChanges, agentv1.CapPortIn, agentv1.CapWatch, agentv1.CapReclaim}
