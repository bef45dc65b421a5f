package main

// Output formats shared by every command: -o table|wide|json|yaml|value,
// -c/--column, --no-headers, and --json (kept from the first CLI as an
// alias of -o json). Listings are tables of columns; a single object (a
// host, the cluster, a command's result) is a set of named fields, printed
// in its own layout for table and wide.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// Output formats.
const (
	outTable = "table"
	outWide  = "wide"
	outJSON  = "json"
	outYAML  = "yaml"
	outValue = "value"
)

var allFormats = []string{outTable, outWide, outJSON, outYAML, outValue}

// maxTableWidth is the width -o table keeps within: long free-text cells
// are cut (with …) to fit; -o wide shows them whole.
const maxTableWidth = 100

// output is one command's output flags.
type output struct {
	format    string
	columns   []string
	noHeaders bool
	jsonAlias bool
	formats   []string
	names     []string // columns (listings) or fields (single objects), for -c
	kind      string   // "column" or "field", for messages
}

// addOutput adds -o (one of formats), --json and, when the command has
// names to pick, -c and --no-headers.
func addOutput(cmd *cobra.Command, kind string, names []string, formats ...string) *output {
	o := &output{formats: formats, names: names, kind: kind}
	fs := cmd.Flags()
	fs.StringVarP(&o.format, "output", "o", outTable, "output format: "+strings.Join(formats, ", "))
	if len(names) > 0 {
		fs.StringSliceVarP(&o.columns, "column", "c", nil, "show only this "+kind+" (repeat, or separate with commas): "+strings.Join(names, ", "))
		fs.BoolVar(&o.noHeaders, "no-headers", false, "leave out the header row of tables")
		_ = cmd.RegisterFlagCompletionFunc("column", completeFixed(names))
	}
	fs.BoolVar(&o.jsonAlias, "json", false, "same as -o json")
	_ = cmd.RegisterFlagCompletionFunc("output", completeFixed(formats))
	return o
}

// check validates the flags once cobra has parsed them.
func (o *output) check(cmd *cobra.Command) error {
	if o.jsonAlias {
		if cmd.Flags().Changed("output") && o.format != outJSON {
			return usagef("--json and -o %s contradict each other", o.format)
		}
		o.format = outJSON
	}
	if !slices.Contains(o.formats, o.format) {
		return usagef("-o %q: want one of %s", o.format, strings.Join(o.formats, ", "))
	}
	if len(o.columns) == 0 {
		return nil
	}
	if o.format == outJSON || o.format == outYAML {
		return usagef("-c picks the %ss of table, wide and value output; -o %s prints the whole answer", o.kind, o.format)
	}
	for i, c := range o.columns {
		k := colKey(c)
		if !slices.Contains(o.names, k) {
			return usagef("no %s %q: want one of %s", o.kind, c, strings.Join(o.names, ", "))
		}
		o.columns[i] = k
	}
	return nil
}

func (o *output) structured() bool { return o.format == outJSON || o.format == outYAML }

// printWhole prints v as JSON or YAML (o.structured()).
func (o *output) printWhole(w io.Writer, v any) {
	if o.format == outYAML {
		printYAML(w, v)
		return
	}
	printJSON(w, v)
}

func completeFixed(vals []string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return vals, cobra.ShellCompDirectiveNoFileComp
	}
}

// colKey is the -c name of a column header: "RAFT ADDRESS" → raft-address.
func colKey(name string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(name), " ", "-"))
}

// ---- listings ----

// column is one column of a listing. get returns the raw value ("" when
// there is none: tables show "-", value output nothing).
type column[T any] struct {
	name  string
	get   func(T) string
	wide  bool // only with -o wide, or when named with -c
	flex  bool // free text: cut to keep -o table within maxTableWidth
	right bool
	min   int // least width
	smin  int // least width of a streamed table (rows not known yet)
	paint func(style, string) string
}

func columnNames[T any](cols []column[T]) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = colKey(c.name)
	}
	return out
}

// table renders rows of T with the columns the output flags select.
type table[T any] struct {
	cols    []column[T]
	widths  []int
	limit   int
	headers bool
	value   bool
	st      style
	cut     int // cells cut so far
}

func newTable[T any](o *output, st style, all []column[T]) *table[T] {
	t := &table[T]{headers: !o.noHeaders, st: st, value: o.format == outValue}
	if o.format == outTable {
		t.limit = maxTableWidth
	}
	if len(o.columns) > 0 {
		for _, k := range o.columns {
			for _, c := range all {
				if colKey(c.name) == k {
					t.cols = append(t.cols, c)
				}
			}
		}
	} else {
		for _, c := range all {
			if !c.wide || o.format == outWide {
				t.cols = append(t.cols, c)
			}
		}
	}
	if t.value {
		t.headers, t.st = false, style{}
	}
	return t
}

// fit sets the column widths for rows: each column as wide as its widest
// cell (and header), then, within the limit, the free-text columns
// narrowed from the last one on.
func (t *table[T]) fit(rows []T) {
	t.widths = make([]int, len(t.cols))
	for i, c := range t.cols {
		w := c.min
		if t.headers {
			w = max(w, runeLen(c.name))
		}
		for _, r := range rows {
			w = max(w, runeLen(cellText(c.get(r))))
		}
		t.widths[i] = w
	}
	if t.limit <= 0 {
		return
	}
	total := 2 * (len(t.cols) - 1)
	for _, w := range t.widths {
		total += w
	}
	for i := len(t.cols) - 1; i >= 0 && total > t.limit; i-- {
		if !t.cols[i].flex {
			continue
		}
		least := 12
		if t.headers {
			least = max(least, runeLen(t.cols[i].name))
		}
		if d := min(total-t.limit, t.widths[i]-least); d > 0 {
			t.widths[i] -= d
			total -= d
		}
	}
}

func cellText(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runeLen(s string) int { return utf8.RuneCountInString(s) }

// cutTo shortens s to n runes, the last one an ellipsis.
func cutTo(s string, n int) string {
	if runeLen(s) <= n {
		return s
	}
	r := []rune(s)
	if n <= 1 {
		return "…"
	}
	return string(r[:n-1]) + "…"
}

func (t *table[T]) writeHeader(w io.Writer) {
	if !t.headers {
		return
	}
	cells := make([]string, len(t.cols))
	for i, c := range t.cols {
		cells[i] = c.name
	}
	t.line(w, cells, nil)
}

func (t *table[T]) writeRow(w io.Writer, r T) {
	cells := make([]string, len(t.cols))
	paints := make([]func(style, string) string, len(t.cols))
	for i, c := range t.cols {
		cells[i], paints[i] = c.get(r), c.paint
	}
	t.line(w, cells, paints)
}

func (t *table[T]) line(w io.Writer, cells []string, paints []func(style, string) string) {
	var b strings.Builder
	if t.value {
		for i, c := range cells {
			if i > 0 {
				b.WriteByte('\t')
			}
			b.WriteString(strings.NewReplacer("\t", " ", "\n", " ").Replace(c))
		}
		fmt.Fprintln(w, b.String())
		return
	}
	last := len(cells) - 1
	for i, c := range cells {
		c = cellText(c)
		if t.cols[i].flex && t.limit > 0 && t.widths != nil && runeLen(c) > t.widths[i] {
			c = cutTo(c, t.widths[i])
			t.cut++
		}
		pad := 0
		if t.widths != nil {
			pad = t.widths[i] - runeLen(c)
		}
		shown := c
		if paints != nil && paints[i] != nil {
			shown = paints[i](t.st, c)
		}
		if t.cols[i].right {
			b.WriteString(strings.Repeat(" ", max(pad, 0)))
			b.WriteString(shown)
		} else {
			b.WriteString(shown)
			if i < last {
				b.WriteString(strings.Repeat(" ", max(pad, 0)))
			}
		}
		if i < last {
			b.WriteString("  ")
		}
	}
	fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
}

// stream fits the widths to rows (the first batch of a stream; more rows
// are written with the same widths), giving the free-text columns all the
// room left within the limit.
func (t *table[T]) stream(rows []T) {
	t.fit(rows)
	for i, c := range t.cols {
		t.widths[i] = max(t.widths[i], c.smin)
	}
	if t.limit <= 0 {
		return
	}
	used := 2 * (len(t.cols) - 1)
	for i, c := range t.cols {
		if !c.flex {
			used += t.widths[i]
		}
	}
	flex := 0
	for _, c := range t.cols {
		if c.flex {
			flex++
		}
	}
	for i, c := range t.cols {
		if c.flex {
			t.widths[i] = max(t.widths[i], (t.limit-used)/flex, 12)
		}
	}
}

// render fits the widths to rows and writes the header and the rows.
func (t *table[T]) render(w io.Writer, rows []T) {
	t.fit(rows)
	t.writeHeader(w)
	for _, r := range rows {
		t.writeRow(w, r)
	}
}

// noteCut tells (on stderr) that cells were cut to fit.
func (t *table[T]) noteCut(stderr io.Writer) {
	if t.cut > 0 {
		fmt.Fprintf(stderr, "(%d long cell(s) cut to fit %d columns: -o wide shows them whole)\n", t.cut, maxTableWidth)
	}
}

// ---- single objects ----

// field is one named value of a single object (-c NAME, -o value).
type field[T any] struct {
	name string
	get  func(T) string
}

func fieldNames[T any](fs []field[T]) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.name
	}
	return out
}

// printFields prints the fields -c names (all without -c): one value per
// line for -o value, a FIELD VALUE table otherwise.
func printFields[T any](w io.Writer, o *output, st style, fs []field[T], v T) {
	sel := fs
	if len(o.columns) > 0 {
		sel = nil
		for _, k := range o.columns {
			for _, f := range fs {
				if f.name == k {
					sel = append(sel, f)
				}
			}
		}
	}
	if o.format == outValue {
		for _, f := range sel {
			fmt.Fprintln(w, strings.ReplaceAll(f.get(v), "\n", " "))
		}
		return
	}
	type kv struct{ k, v string }
	rows := make([]kv, len(sel))
	for i, f := range sel {
		rows[i] = kv{f.name, f.get(v)}
	}
	cols := []column[kv]{
		{name: "FIELD", get: func(r kv) string { return r.k }},
		{name: "VALUE", get: func(r kv) string { return r.v }, flex: true},
	}
	t := newTable(&output{format: o.format, noHeaders: o.noHeaders}, st, cols)
	t.render(w, rows)
}

// ---- JSON and YAML ----

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func printJSONLine(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", b)
}

// printYAML prints v as YAML with its JSON field names, in the JSON
// order (so that -o yaml and -o json show the same document).
func printYAML(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err == nil {
		b, err = jsonToYAML(b)
	}
	if err != nil {
		fmt.Fprintf(w, "# cannot render as YAML: %v\n", err)
		return
	}
	_, _ = w.Write(b)
}

func jsonToYAML(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	n, err := yamlNode(dec)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func yamlNode(dec *json.Decoder) (*yaml.Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if t == '{' {
			n = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		}
		for dec.More() {
			if n.Kind == yaml.MappingNode {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, _ := k.(string)
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key})
			}
			v, err := yamlNode(dec)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, v)
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		if len(n.Content) == 0 {
			n.Style = yaml.FlowStyle // {} and []
		}
		return n, nil
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t}, nil
	case json.Number:
		tag := "!!int"
		if strings.ContainsAny(t.String(), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: t.String()}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(t)}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}
