// Command deploy-go checks Prometheus Operator resources against the operator's own Go API
// types (github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1, the types
// its CRDs are generated from): every field must be one the type declares, of its type.
//
//	deploy-go < docs.json
//
// stdin: a JSON array of documents. stdout: a JSON array, per document {"kind", "name",
// "errors": [...]}; exit 0 (2 when stdin is not a JSON array). Used by
// tests/integration/deploy_check.py next to servicemonitor_check.js, which checks the CRD's
// schema (required fields, patterns) but lets unknown fields through, as the API server
// prunes them.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

type result struct {
	Kind   string   `json:"kind"`
	Name   string   `json:"name"`
	Errors []string `json:"errors"`
}

func check(raw json.RawMessage) result {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	r := result{Errors: []string{}}
	if err := json.Unmarshal(raw, &meta); err != nil {
		r.Errors = append(r.Errors, err.Error())
		return r
	}
	r.Kind, r.Name = meta.Kind, meta.Metadata.Name
	var into any
	switch meta.APIVersion + "/" + meta.Kind {
	case "monitoring.coreos.com/v1/ServiceMonitor":
		into = &monitoringv1.ServiceMonitor{}
	case "monitoring.coreos.com/v1/PodMonitor":
		into = &monitoringv1.PodMonitor{}
	default:
		r.Errors = append(r.Errors, fmt.Sprintf("no Go type for %s/%s", meta.APIVersion, meta.Kind))
		return r
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		r.Errors = append(r.Errors, err.Error())
	}
	return r
}

func main() {
	in, err := io.ReadAll(os.Stdin)
	var docs []json.RawMessage
	if err == nil {
		err = json.Unmarshal(in, &docs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy-go: stdin:", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(docs))
	for _, d := range docs {
		out = append(out, check(d))
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(2)
	}
}
