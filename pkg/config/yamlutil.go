package config

import (
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// parseYAML decodes data into a node tree. A syntax error becomes a Problem
// naming file and line; yaml.v3's syntax messages never quote the document,
// and the collector scrubs them anyway.
func parseYAML(file string, data []byte, c *collector) (*yaml.Node, bool) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line, msg := yamlErrorLine(err.Error())
		c.add(Problem{File: file, Line: line, Reason: "malformed YAML: " + msg})
		return nil, false
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, true // empty document
	}
	return resolve(doc.Content[0]), true
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): `)

// yamlErrorLine splits "yaml: line 3: did not find expected key" into 3 and
// "did not find expected key".
func yamlErrorLine(msg string) (int, string) {
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n, msg[len(m[0]):]
	}
	return 0, strings.TrimPrefix(msg, "yaml: ")
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// shown renders a node for a message: strings quoted, other scalars as
// written, collections by kind. Never use it on a secret.
func shown(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 80 {
			v = v[:77] + "..."
		}
		if n.Tag == "!!str" {
			return strconv.Quote(v)
		}
		if n.Tag == "!!null" {
			return "null"
		}
		return v
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a map"
	}
	return "a value"
}

// nodeInt reads an integer: a YAML int, or a string holding one (InstanceHA
// writes "30").
func nodeInt(n *yaml.Node) (int, bool) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!str") {
		return 0, false
	}
	v := strings.TrimSpace(n.Value)
	if i, err := strconv.Atoi(v); err == nil {
		return i, true
	}
	if n.Tag == "!!int" {
		if i, err := strconv.ParseInt(strings.ReplaceAll(v, "_", ""), 0, 64); err == nil && int64(int(i)) == i {
			return int(i), true
		}
	}
	return 0, false
}

// nodeBool reads a boolean: a YAML bool, or one of the strings InstanceHA
// accepts (case-insensitive). Anything else is not a boolean: InstanceHA
// reads it as false, we reject it.
func nodeBool(n *yaml.Node) (bool, bool) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!bool" && n.Tag != "!!str") {
		return false, false
	}
	switch strings.ToLower(strings.TrimSpace(n.Value)) {
	case "true", "1", "yes", "on", "enabled":
		return true, true
	case "false", "0", "no", "off", "disabled":
		return false, true
	}
	return false, false
}

// nodeString reads any scalar as text.
func nodeString(n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	return n.Value, true
}

// nodeList reads a YAML list of scalars or a comma-separated string.
func nodeList(n *yaml.Node) ([]string, bool) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, true
		}
		var out []string
		for _, p := range strings.Split(n.Value, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out, true
	case yaml.SequenceNode:
		out := make([]string, 0, len(n.Content))
		for _, e := range n.Content {
			e = resolve(e)
			if e.Kind != yaml.ScalarNode || e.Tag == "!!null" {
				return nil, false
			}
			if v := strings.TrimSpace(e.Value); v != "" {
				out = append(out, v)
			}
		}
		return out, true
	}
	return nil, false
}

// suggest returns a " (did you mean X?)" hint when name is close to one of
// known.
func suggest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return " (did you mean " + k + "?)"
		}
		if d := levenshtein(strings.ToLower(name), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

func levenshtein(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
