package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/template"
)

// printInspect writes what inspect found: a JSON array, or with format
// (docker's --format / -f) a Go template run on each object, one line
// each. A template sees the object as its JSON reads (`{{.State.Status}}`,
// `{{.NetworkSettings.IPAddress}}`) and has docker's json, join, lower,
// upper and title functions.
func printInspect(w io.Writer, objs []any, format string) error {
	if format == "" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "    ")
		return enc.Encode(objs)
	}
	t, err := formatTemplate(format)
	if err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	for _, o := range objs {
		// Through JSON, so that a template names what the JSON shows.
		b, err := json.Marshal(o)
		if err != nil {
			return err
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		if err := t.Execute(w, v); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		fmt.Fprintln(w)
	}
	return nil
}

// formatTemplate parses --format's Go template, with docker's json, join,
// lower, upper and title functions.
func formatTemplate(format string) (*template.Template, error) {
	return template.New("format").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"join":  strings.Join,
		"lower": strings.ToLower,
		"upper": strings.ToUpper,
		"title": func(s string) string {
			if s == "" {
				return s
			}
			return strings.ToUpper(s[:1]) + s[1:]
		},
	}).Option("missingkey=zero").Parse(format)
}
