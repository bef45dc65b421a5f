package nova

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ihaproject/iha/pkg/novasim"
)

// BenchmarkListServersOnHost measures one full "servers on host H" listing
// of 1,000 servers against novasim over real HTTP (one page at Nova's
// default max_limit), the call the leader makes per failed host.
func BenchmarkListServersOnHost(b *testing.B) {
	sim, err := novasim.New(novasim.Options{Password: canary})
	if err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	sim.AddCompute("big", "nova")
	const n = 1000
	for i := range n {
		sim.AddServer(novasim.ServerSpec{Name: fmt.Sprintf("vm-%d", i), Host: "big", Metadata: map[string]string{"k": "v"}})
	}
	c, err := New(simCloud(sim), Options{Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := b.Context()
	if err := c.Ping(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := c.ListServers(ctx, "big")
		if err != nil || len(got) != n {
			b.Fatalf("%d servers, %v", len(got), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/listing")
}

// BenchmarkDecodeServers isolates the client's share: decoding a page of
// 1,000 servers as Nova 2.93 prints them.
func BenchmarkDecodeServers(b *testing.B) {
	body := []byte(`{"servers": [`)
	for i := range 1000 {
		if i > 0 {
			body = append(body, ',')
		}
		body = fmt.Appendf(body, `{"OS-EXT-SRV-ATTR:host": "compute-1", "OS-EXT-STS:task_state": null, "OS-EXT-STS:vm_state": "active",
			"flavor": {"disk": 1, "ephemeral": 0, "extra_specs": {"evacuable": "true"}, "original_name": "m1.tiny", "ram": 512, "swap": 0, "vcpus": 1},
			"id": "00000000-0000-0000-0000-%012d", "image": {"id": "70a599e0-31e7-49b7-b260-868f441e862b", "links": []},
			"locked": false, "locked_reason": null, "metadata": {"k": "v"}, "name": "vm-%d", "status": "ACTIVE",
			"tenant_id": "6f70656e737461636b20342065766572", "updated": "2026-11-21T13:00:03Z"}`, i, i)
	}
	body = append(body, `], "servers_links": []}`...)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var page struct {
			Servers []serverWire `json:"servers"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			b.Fatal(err)
		}
		for _, w := range page.Servers {
			_ = w.server()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "µs/server")
}
