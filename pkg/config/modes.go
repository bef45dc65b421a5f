package config

import (
	"fmt"
	"os"
)

// checkSecretModes warns about every file holding a secret that users
// other than its owner and group may read (or write): the packages install
// them 0640 root:iha, and a copy or an editor can lose that.
func checkSecretModes(files Files, s Settings, c *collector) {
	type secretFile struct{ path, holds string }
	list := []secretFile{
		{files.Secure, "the cloud's password"},
		{files.Clouds, "the cloud's credentials"},
		{files.Fencing, "the BMC passwords"},
		{s.GossipKeyring, "the gossip keyring"},
		{s.ClusterKey, "the cluster key"},
		{s.RaftTLSKey, "the Raft TLS private key"},
		{s.APITLSKey, "the status API's TLS private key"},
		{s.SSLKeyPath, "the BMC client TLS private key"},
	}
	if !s.APIToken.IsZero() || !s.APIReadToken.IsZero() {
		list = append(list, secretFile{files.Config, "API_TOKEN or API_READ_TOKEN"})
	}
	seen := map[string]bool{}
	for _, f := range list {
		if f.path == "" || seen[f.path] {
			continue
		}
		seen[f.path] = true
		st, err := os.Stat(f.path)
		if err != nil || st.IsDir() {
			continue // missing files are reported where they are needed
		}
		if m := st.Mode().Perm(); m&0o006 != 0 {
			c.warn(fmt.Sprintf("%s: mode %04o: every user of this host can read it, and it holds %s; make it 0640 root:iha (chmod o-rw %s)",
				f.path, m, f.holds, f.path))
		}
	}
}
