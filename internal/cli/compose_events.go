package cli

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/compose"
)

// composeEventsCommand is `lodge compose events [--json] [SERVICE...]`:
// the project's containers' events as they come (the journal of `lodge
// events`, by the project's label), as docker compose's: docker's line,
// or with --json compose's own object.
func composeEventsCommand(run func(func(*composeCmd, []string) error) func(*cobra.Command, []string) error) *cobra.Command {
	var asJSON bool
	events := &cobra.Command{Use: "events [--json] [SERVICE...]", Short: "the services' containers' events as they come (until Ctrl-C)",
		RunE: run(func(c *composeCmd, args []string) error {
			for _, s := range args {
				if _, ok := c.p.Services[s]; !ok {
					return fmt.Errorf("no such service: %s", s)
				}
			}
			enc := json.NewEncoder(c.cmd.OutOrStdout())
			return followEvents(c.cmd.Context(), time.Now(), time.Time{}, func(e event) {
				service, ok := composeWants(e, c.p.Name, args)
				if !ok {
					return
				}
				if !asJSON {
					fmt.Fprintln(c.cmd.OutOrStdout(), eventText(e))
					return
				}
				enc.Encode(composeEvent{Time: time.Unix(0, e.TimeNano).UTC(), Type: e.Type, Action: e.Action, ID: e.Actor.ID,
					Service: service, Attributes: e.Actor.Attributes})
			})
		})}
	events.Flags().BoolVar(&asJSON, "json", false, "one JSON object a line, as docker compose's")
	return events
}

// composeEvent is an event as docker compose events --json prints it.
type composeEvent struct {
	Time       time.Time         `json:"time"`
	Type       string            `json:"type"`
	Action     string            `json:"action"`
	ID         string            `json:"id"`
	Service    string            `json:"service"`
	Attributes map[string]string `json:"attributes"`
}

// composeWants says whether e is an event of project's containers (of
// services, if any are named), and of which service.
func composeWants(e event, project string, services []string) (string, bool) {
	service := e.Actor.Attributes[compose.LabelService]
	return service, e.Type == "container" && e.Actor.Attributes[compose.LabelProject] == project &&
		(len(services) == 0 || slices.Contains(services, service))
}
