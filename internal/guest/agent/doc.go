// Package agent is lodge-agent's server: it accepts the multiplexed channel
// from the host, serves the ttrpc services of api/agent/v1 on "rpc" streams,
// hands stdio streams to the processes they name, and runs OCI containers
// with runc's libcontainer.
package agent
