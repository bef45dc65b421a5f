package monitoring

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"
)

// PrometheusRule wraps rules (the content of iha.rules.yaml) in the
// Prometheus operator's PrometheusRule object named name, for OpenShift's
// and kube-prometheus' monitoring stacks; the groups are copied as they are.
func PrometheusRule(rules []byte, name string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(rules, &doc); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("rules: not a map")
	}
	var groups *yaml.Node
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "groups" {
			groups = m.Content[i+1]
		}
	}
	if groups == nil {
		return nil, fmt.Errorf("rules: no groups")
	}
	str := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }
	kv := func(pairs ...*yaml.Node) *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode, Content: pairs} }
	out := kv(
		str("apiVersion"), str("monitoring.coreos.com/v1"),
		str("kind"), str("PrometheusRule"),
		str("metadata"), kv(str("name"), str(name), str("labels"), kv(str("app.kubernetes.io/name"), str("iha"), str("app.kubernetes.io/part-of"), str("iha"))),
		str("spec"), kv(str("groups"), groups),
	)
	var b bytes.Buffer
	b.WriteString("# Generated from deploy/monitoring/iha.rules.yaml by deploy/monitoring.PrometheusRule:\n")
	b.WriteString("# go test ./deploy/monitoring -run TestPrometheusRuleIsGenerated -update\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return b.Bytes(), enc.Close()
}
