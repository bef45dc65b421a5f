package monitoring

import (
	"encoding/json"
)

// The subset of Grafana's dashboard model (schemaVersion 39) the
// dashboard uses. Field names are Grafana's.
type (
	dashboard struct {
		UID           string     `json:"uid"`
		Title         string     `json:"title"`
		Description   string     `json:"description"`
		Tags          []string   `json:"tags"`
		Timezone      string     `json:"timezone"`
		SchemaVersion int        `json:"schemaVersion"`
		Refresh       string     `json:"refresh"`
		Time          timeRange  `json:"time"`
		Templating    templating `json:"templating"`
		Panels        []panel    `json:"panels"`
		Editable      bool       `json:"editable"`
	}
	timeRange  struct{ From, To string }
	templating struct {
		List []variable `json:"list"`
	}
	variable struct {
		Name  string `json:"name"`
		Label string `json:"label"`
		Type  string `json:"type"`
		Query string `json:"query"`
	}
	panel struct {
		ID          int          `json:"id"`
		Type        string       `json:"type"`
		Title       string       `json:"title"`
		Description string       `json:"description,omitempty"`
		GridPos     gridPos      `json:"gridPos"`
		Datasource  *datasource  `json:"datasource,omitempty"`
		Targets     []target     `json:"targets,omitempty"`
		FieldConfig *fieldConfig `json:"fieldConfig,omitempty"`
		Options     any          `json:"options,omitempty"`
		Collapsed   *bool        `json:"collapsed,omitempty"`
		Panels      []panel      `json:"panels,omitempty"`
	}
	gridPos    struct{ H, W, X, Y int }
	datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	target struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat,omitempty"`
		Instant      bool   `json:"instant,omitempty"`
		Format       string `json:"format,omitempty"`
	}
	fieldConfig struct {
		Defaults fieldDefaults `json:"defaults"`
	}
	fieldDefaults struct {
		Unit       string      `json:"unit,omitempty"`
		Min        *float64    `json:"min,omitempty"`
		Thresholds *thresholds `json:"thresholds,omitempty"`
	}
	thresholds struct {
		Mode  string `json:"mode"`
		Steps []step `json:"steps"`
	}
	step struct {
		Color string   `json:"color"`
		Value *float64 `json:"value"`
	}
)

func (t timeRange) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"from": t.From, "to": t.To})
}

func (g gridPos) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]int{"h": g.H, "w": g.W, "x": g.X, "y": g.Y})
}

var prom = &datasource{Type: "prometheus", UID: "${datasource}"}

func f(v float64) *float64 { return &v }

// thresholdsGreenRed is green below at, red from it.
func thresholdsGreenRed(at float64) *thresholds {
	return &thresholds{Mode: "absolute", Steps: []step{{Color: "green", Value: nil}, {Color: "red", Value: f(at)}}}
}

// thresholdsRedGreen is red below at, green from it.
func thresholdsRedGreen(at float64) *thresholds {
	return &thresholds{Mode: "absolute", Steps: []step{{Color: "red", Value: nil}, {Color: "green", Value: f(at)}}}
}

// layout places panels left to right, 24 columns wide, in rows.
type layout struct {
	panels []panel
	x, y   int
	rowH   int
	id     int
}

func (l *layout) row(title string) {
	if l.x > 0 {
		l.y += l.rowH
		l.x, l.rowH = 0, 0
	}
	l.id++
	l.panels = append(l.panels, panel{ID: l.id, Type: "row", Title: title, GridPos: gridPos{H: 1, W: 24, X: 0, Y: l.y}, Collapsed: new(bool)})
	l.y++
}

func (l *layout) add(p panel, w, h int) {
	if l.x+w > 24 {
		l.y += l.rowH
		l.x, l.rowH = 0, 0
	}
	l.id++
	p.ID = l.id
	p.GridPos = gridPos{H: h, W: w, X: l.x, Y: l.y}
	p.Datasource = prom
	for i := range p.Targets {
		p.Targets[i].RefID = string(rune('A' + i))
	}
	l.panels = append(l.panels, p)
	l.x += w
	l.rowH = max(l.rowH, h)
}

func stat(title, desc, expr, unit string, th *thresholds) panel {
	return panel{Type: "stat", Title: title, Description: desc, Targets: []target{{Expr: expr, Instant: true}},
		FieldConfig: &fieldConfig{Defaults: fieldDefaults{Unit: unit, Thresholds: th}},
		Options:     map[string]any{"colorMode": "background", "graphMode": "none", "reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}}}}
}

func series(title, desc, unit string, targets ...target) panel {
	return panel{Type: "timeseries", Title: title, Description: desc, Targets: targets,
		FieldConfig: &fieldConfig{Defaults: fieldDefaults{Unit: unit, Min: f(0)}},
		Options:     map[string]any{"legend": map[string]any{"displayMode": "table", "placement": "right", "calcs": []string{"lastNotNull", "max"}}}}
}

func q(expr, legend string) target { return target{Expr: expr, LegendFormat: legend} }

// Dashboard is IHA's Grafana dashboard, as indented JSON. It reads the
// series of deploy/monitoring/iha.rules.yaml's recording rules where they
// exist, and IHA's metrics otherwise.
func Dashboard() []byte {
	var l layout
	l.row("Now")
	l.add(stat("Raft leader", "Controllers that are the Raft leader: exactly 1 is healthy.", "iha:raft_leaders:sum", "none",
		&thresholds{Mode: "absolute", Steps: []step{{Color: "red", Value: nil}, {Color: "green", Value: f(1)}, {Color: "red", Value: f(2)}}}), 4, 4)
	l.add(stat("Controllers in Raft", "Controllers that are leader or follower, of the voters.", "iha:controllers_in_raft:count", "none", thresholdsRedGreen(2)), 4, 4)
	l.add(stat("Recovery paused", "1: DISABLED, nothing is fenced or evacuated.", "max(iha_paused)", "none", thresholdsGreenRed(1)), 4, 4)
	l.add(stat("Hosts in recovery", "Recoveries in progress.", "max(instanceha_hosts_processing)", "none", thresholdsGreenRed(1)), 4, 4)
	l.add(stat("Failed recoveries", "Recoveries that need an operator (iha hosts).", `sum(iha:recovery_records:max{phase="failed"}) or vector(0)`, "none", thresholdsGreenRed(1)), 4, 4)
	l.add(stat("Nova polls failed in a row", "On the leader.", "max(instanceha_poll_consecutive_failures)", "none", thresholdsGreenRed(3)), 4, 4)

	l.row("Hosts and recoveries")
	l.add(series("Hosts by verdict", "The leader's verdict of every compute at its last poll (hosts in recovery are not judged).", "none",
		q("iha:hosts_by_verdict:max", "{{verdict}}")), 12, 8)
	l.add(series("Recovery records by phase", "Every host's record in the replicated state, by phase.", "none",
		q("iha:recovery_records:max", "{{phase}}")), 12, 8)
	l.add(series("Recoveries in flight: time in phase", "How long each recovering host has been in its phase (stuck after 15 minutes in a working phase).", "s",
		q(`iha:recovery_phase_age_seconds`, "{{host}} {{phase}}")), 12, 8)
	l.add(series("Fences and evacuations", "Per hour, by result.", "none",
		q(`sum by (result) (max by (host, result) (increase(instanceha_fencing_total[1h])))`, "fence {{result}}"),
		q(`sum by (result) (max by (host, result) (increase(instanceha_instance_evacuation_total[1h])))`, "instance {{result}}")), 12, 8)

	l.row("Latency")
	l.add(series("Detection latency", "From a failed host's last Nova heartbeat to the verdict, over the recoveries kept in the state.", "s",
		q("iha:detection_latency_seconds:p50", "p50"), q("iha:detection_latency_seconds:p95", "p95")), 8, 8)
	l.add(series("Recovery step duration (p95)", "Each step, from its intent committed to its result committed.", "s",
		q(`histogram_quantile(0.95, max by (le, step) (iha_recovery_step_duration_seconds_bucket{outcome="ok"}))`, "{{step}}")), 8, 8)
	l.add(series("Evacuation duration (p95)", "Instance evacuations, request to done.", "s",
		q(`histogram_quantile(0.95, max by (le) (instanceha_instance_evacuation_duration_seconds_bucket))`, "p95")), 8, 8)

	l.row("Raft")
	l.add(series("Term and elections", "A term per election; elections started by each controller.", "none",
		q("iha:raft_term:max", "term"), q("sum by (instance) (increase(raft_state_candidate[5m]))", "elections {{instance}}")), 8, 8)
	l.add(series("Follower contact", "Seconds since each follower heard from the leader.", "s",
		q(`iha_raft_last_contact_seconds >= 0`, "{{instance}}")), 8, 8)
	l.add(series("Commit time (p99)", "From append on the leader to commit, by raft (milliseconds).", "ms",
		q(`max by (instance) (raft_commitTime{quantile="0.99"})`, "{{instance}}")), 8, 8)

	l.row("Gossip mesh")
	l.add(series("Mesh members by state", "As the controllers see the mesh.", "none", q("iha:mesh_members:max", "{{state}}")), 8, 8)
	l.add(series("Mesh health", "Lifeguard awareness (0 is healthy) of controllers and agents.", "none",
		q("max by (instance) (iha_mesh_health_score)", "{{instance}}"), q("max(iha_agent_mesh_health_score)", "worst agent")), 8, 8)
	l.add(series("Agents without a controller", "Agents that have not joined or see no controller alive.", "none",
		q("count(iha_agent_mesh_joined == 0 or iha_agent_controllers_alive == 0) or vector(0)", "agents")), 8, 8)

	l.row("Nova and the agents")
	l.add(series("Nova polls", "Poll cycles of Nova by result, per minute, and their 95th percentile duration.", "none",
		q("sum by (result) (rate(instanceha_poll_cycles_total[5m])) * 60", "{{result}}/min"), q("iha:poll_duration_seconds:p95", "p95 seconds")), 8, 8)
	l.add(series("fence_kdump packets", "Received by the agents, by outcome, per minute.", "none",
		q("sum by (outcome) (rate(iha_agent_kdump_packets_total[5m])) * 60", "{{outcome}}")), 8, 8)
	l.add(series("Gate answers", "What `iha-agent gate` got before nova-compute started, per hour.", "none",
		q("sum by (result) (increase(iha_agent_gate_answers_total[1h]))", "{{result}}")), 8, 8)

	d := dashboard{UID: "iha-overview", Title: "IHA: instance high availability", Tags: []string{"iha", "openstack"},
		Description: "Generated by deploy/monitoring (Dashboard); edit the code, not the JSON.",
		Timezone:    "browser", SchemaVersion: 39, Refresh: "30s", Time: timeRange{From: "now-6h", To: "now"},
		Templating: templating{List: []variable{{Name: "datasource", Label: "Prometheus", Type: "datasource", Query: "prometheus"}}},
		Panels:     l.panels}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// Queries returns every PromQL expression of the dashboard.
func Queries() []string {
	var out []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out = append(out, t.Expr)
			}
			walk(p.Panels)
		}
	}
	var d dashboard
	if err := json.Unmarshal(Dashboard(), &d); err != nil {
		panic(err)
	}
	walk(d.Panels)
	return out
}
