package leader

import (
	"sync"
	"testing"
)

func TestEpisodesReportOncePerEpisode(t *testing.T) {
	var e episodes
	if !e.Once(episodeNovaBroken, "c1") {
		t.Fatal("the first sighting is not reported")
	}
	if e.Once(episodeNovaBroken, "c1") {
		t.Fatal("a lasting condition is reported twice")
	}
	// Kinds and hosts are separate episodes: the old multiplexed keys
	// ("nova:"+host, "kdump:"+host, "" for the threshold) must not meet.
	if !e.Once(episodeKdumpIgnored, "c1") || !e.Once(episodeNovaBroken, "c2") || !e.Once(episodeNovaBroken, "") {
		t.Fatal("another kind or host shares an episode")
	}
	e.Clear(episodeNovaBroken, "c1")
	if !e.Once(episodeNovaBroken, "c1") {
		t.Fatal("a condition that came back after Clear is not reported")
	}
	if e.Once(episodeKdumpIgnored, "c1") {
		t.Fatal("Clear of one kind ended another's episode")
	}
	e.Clear(episodeHeartbeatAlive, "c9") // clearing what was never seen is harmless
}

func TestEpisodesOnceForReportsEachNewVariant(t *testing.T) {
	var e episodes
	if !e.OnceFor(episodeThreshold, "", "threshold:3") {
		t.Fatal("the first variant is not reported")
	}
	if e.OnceFor(episodeThreshold, "", "threshold:3") {
		t.Fatal("the same variant is reported twice")
	}
	if !e.OnceFor(episodeThreshold, "", "threshold:4") {
		t.Fatal("a new variant is not reported")
	}
	if !e.OnceFor(episodeThreshold, "", "threshold:3") {
		t.Fatal("going back to an earlier variant is a change too")
	}
	e.Clear(episodeThreshold, "")
	if !e.OnceFor(episodeThreshold, "", "threshold:3") {
		t.Fatal("the variant is not reported again after Clear")
	}
}

func TestEpisodesConcurrentOnceReportsOnce(t *testing.T) {
	var e episodes
	var wg sync.WaitGroup
	var mu sync.Mutex
	reports := 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if e.Once(episodePowerOnWait, "c1") {
				mu.Lock()
				reports++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if reports != 1 {
		t.Fatalf("%d goroutines reported the same episode, want 1", reports)
	}
}
