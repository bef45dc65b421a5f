package leader

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// ErrDataDir is wrapped by every error about DATA_DIR's Raft state that a
// restart cannot fix: a corrupt or empty raft.db, or snapshots without
// their store. iha-leader exits with a status its systemd unit does not
// restart on (RestartPreventExitStatus), so that an operator looks before
// anything is lost.
var ErrDataDir = errors.New("raft state needs an operator")

// openStore opens DataDir/raft.db after checking it, and never panics:
//
//   - a raft.db of 0 bytes (a file system that lost its content) is
//     refused: opening it would make a node with no term, no vote and no
//     log, which bootstraps or joins as a new member and forgets every
//     recovery it held. With startFresh the empty file is removed first,
//     the operator's explicit choice.
//   - no raft.db while snapshots exist is refused: the snapshots' state
//     would come back without the term and vote, and a voter that forgets
//     its vote can vote twice in one term.
//   - a corrupt raft.db (bbolt panics on damaged pages, and raft on log
//     entries it cannot read) is refused with an error naming the file:
//     every page and every log entry is read once here, in this goroutine,
//     where a panic is recovered.
func openStore(dir string, startFresh bool, log *slog.Logger) (*raftboltdb.BoltStore, error) {
	path := filepath.Join(dir, "raft.db")
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if snaps := snapshotNames(dir); len(snaps) > 0 {
			return nil, fmt.Errorf("%w: %s does not exist but %s holds snapshots (%s): the term and vote they need are gone; "+
				"move DATA_DIR aside and let this controller rejoin (RAFT_JOIN), or restore raft.db",
				ErrDataDir, path, filepath.Join(dir, "snapshots"), strings.Join(snaps, ", "))
		}
	case err != nil:
		return nil, fmt.Errorf("raft: %s: %w", path, err)
	case st.Size() == 0 && !startFresh:
		return nil, fmt.Errorf("%w: %s is empty (0 bytes): this controller's Raft state (term, vote, log) is lost; starting on it "+
			"would make a new member with none of the recoveries it held. To start this controller with no state, remove the file "+
			"(or run iha-leader -start-fresh once); with RAFT_JOIN it then rejoins the group", ErrDataDir, path)
	case st.Size() == 0:
		log.Warn("raft: removing an empty raft.db (-start-fresh): this controller starts with no Raft state", "file", path)
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("raft: remove empty %s: %w", path, err)
		}
	default:
		if err := checkBolt(path); err != nil {
			return nil, err
		}
	}
	return openBolt(path)
}

// checkBolt reads every page of the bolt file once, read-only, recovering
// bbolt's panics on damaged pages.
func checkBolt(path string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s is corrupt (%v): restore it from a backup, or move DATA_DIR aside and let this controller rejoin (RAFT_JOIN)",
				ErrDataDir, path, p)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("%w: %s is locked by another process (another iha-leader on this DATA_DIR?)", ErrDataDir, path)
	}
	if err != nil {
		return fmt.Errorf("%w: %s cannot be opened (%v): restore it from a backup, or move DATA_DIR aside and let this controller rejoin (RAFT_JOIN)",
			ErrDataDir, path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			walkBucket(b)
			return nil
		})
	})
}

func walkBucket(b *bolt.Bucket) {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			if sub := b.Bucket(k); sub != nil {
				walkBucket(sub)
			}
		}
	}
}

// openBolt opens the store read-write and reads its stable keys and every
// log entry once (raft panics on an entry it cannot decode later on).
func openBolt(path string) (store *raftboltdb.BoltStore, err error) {
	defer func() {
		if p := recover(); p != nil {
			if store != nil {
				_ = store.Close()
			}
			store, err = nil, fmt.Errorf("%w: %s is corrupt (%v)", ErrDataDir, path, p)
		}
	}()
	store, err = raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrDataDir, path, err)
	}
	bad := func(what string, err error) error {
		_ = store.Close()
		return fmt.Errorf("%w: %s is corrupt: %s: %w", ErrDataDir, path, what, err)
	}
	for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
		if _, err := store.GetUint64([]byte(k)); err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
			return nil, bad(k, err)
		}
	}
	first, err := store.FirstIndex()
	if err != nil {
		return nil, bad("first index", err)
	}
	last, err := store.LastIndex()
	if err != nil {
		return nil, bad("last index", err)
	}
	var l raft.Log
	for i := first; i <= last && last > 0; i++ {
		if err := store.GetLog(i, &l); err != nil {
			return nil, bad(fmt.Sprintf("log entry %d of %d–%d", i, first, last), err)
		}
	}
	return store, nil
}

// snapshotNames lists the snapshots raft's file store keeps in dir.
func snapshotNames(dir string) []string {
	ents, err := os.ReadDir(filepath.Join(dir, "snapshots"))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") {
			out = append(out, e.Name())
		}
	}
	return out
}
