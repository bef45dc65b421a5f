package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/ihaproject/iha/fence/fencetest"
)

// asIHA makes the test binary behave as the iha binary when the
// environment says so: the completion test's shell runs it as `iha`
// (`iha __complete …`).
const asIHA = "IHA_CLI_TEST_RUN_AS_IHA"

func TestMain(m *testing.M) {
	if os.Getenv(asIHA) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// ihaOnPath puts the test binary on a PATH as `iha` and returns the
// environment that makes it act as iha.
func ihaOnPath(t *testing.T) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(self, filepath.Join(dir, "iha")); err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(), asIHA+"=1", "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// commands lists every command of the tree that an operator can call.
func commands(t *testing.T) []*cobra.Command {
	t.Helper()
	root := newRoot(&env{ctx: context.Background(), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}})
	var out []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		out = append(out, c)
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	return out
}

// TestHelpOfEveryCommand: help asked for goes to stdout with exit 0, has
// examples, and fits 100 columns; every command is reachable by `iha help
// X` too.
func TestHelpOfEveryCommand(t *testing.T) {
	cliEnvWith(t, nil)
	cmds := commands(t)
	if len(cmds) < 19 {
		t.Fatalf("only %d commands in the tree", len(cmds))
	}
	for _, c := range cmds {
		path := strings.Fields(c.CommandPath())[1:]
		t.Run(strings.Join(append([]string{"iha"}, path...), " "), func(t *testing.T) {
			if c.Example == "" {
				t.Errorf("no Example")
			}
			for _, form := range [][]string{append(append([]string(nil), path...), "--help"), append([]string{"help"}, path...)} {
				code, out, errOut := runCLI(t, form...)
				if code != exitOK || errOut != "" {
					t.Fatalf("iha %v: exit %d, stderr %q", form, code, errOut)
				}
				if !strings.Contains(out, "Usage:\n  "+c.CommandPath()) || !strings.Contains(out, "Examples:\n") {
					t.Fatalf("iha %v: help lacks usage or examples:\n%s", form, out)
				}
				for _, l := range strings.Split(out, "\n") {
					if runeLen(l) > maxTableWidth {
						t.Errorf("iha %v: a help line is %d columns wide:\n%s", form, runeLen(l), l)
					}
				}
				if c.Runnable() && c.HasAvailableFlags() && !strings.Contains(out, "--") {
					t.Errorf("iha %v: help lists no flags", form)
				}
			}
		})
	}
}

// TestUsageErrorsAndFlagsScriptsUse: the first CLI's single-dash long
// flags still work (with a notice), wrong -o/-c/--json use is exit 2, and
// `iha --version` prints the client's version.
func TestUsageErrorsAndFlagsScriptsUse(t *testing.T) {
	url := serveFixture(t, &fixture{})
	cases := []struct {
		name      string
		args      []string
		want      int
		stdoutHas string
		stderrHas string
	}{
		{"single-dash long flags as the first CLI took them", []string{"events", "-limit", "1", "-json"}, exitOK, `"seq": 14`, "-limit is read as --limit"},
		{"single-dash with =", []string{"hosts", "-output=value", "-column=host"}, exitUnhealthy, "compute-9\n", "deprecated"},
		{"short flags untouched", []string{"hosts", "-ovalue", "-chost"}, exitUnhealthy, "compute-1\n", ""},
		{"unknown -o", []string{"hosts", "-o", "csv"}, exitUsage, "", `-o "csv": want one of table, wide, json, yaml, value`},
		{"unknown column", []string{"hosts", "-c", "colour"}, exitUsage, "", `no column "colour": want one of host, mesh`},
		{"unknown field", []string{"status", "-o", "value", "-c", "colour"}, exitUsage, "", `no field "colour"`},
		{"columns with json", []string{"hosts", "-o", "json", "-c", "host"}, exitUsage, "", "-c picks the columns of table, wide and value output"},
		{"--json against -o", []string{"hosts", "--json", "-o", "yaml"}, exitUsage, "", "--json and -o yaml contradict"},
		{"case-insensitive column names", []string{"hosts", "-o", "value", "-c", "HOST"}, exitUnhealthy, "compute-3\n", ""},
		{"a typo is suggested", []string{"hots"}, exitUsage, "", "did you mean host or hosts?"},
		{"no command", nil, exitUsage, "", "Usage:\n  iha COMMAND"},
		{"--version", []string{"--version"}, exitOK, "iha version dev", ""},
		{"events --since garbage", []string{"events", "--since", "yesterday"}, exitUsage, "", `--since "yesterday": want a duration`},
		{"events --kind that is not a kind", []string{"events", "--kind", "Host Down"}, exitUsage, "", `--kind "Host Down" is not an event kind`},
		{"events --since negative", []string{"events", "--since", "-5m"}, exitUsage, "", "must be positive"},
		{"version without a server", []string{"version", "--addr", "127.0.0.1:1"}, exitOK, "client: iha dev", "no server version"},
		{"version --client", []string{"version", "--client", "--addr", "127.0.0.1:1"}, exitOK, "client: iha dev", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cliEnv(t, url, cliCanaryRO)
			code, out, errOut := runCLI(t, c.args...)
			if code != c.want || !strings.Contains(out, c.stdoutHas) || !strings.Contains(errOut, c.stderrHas) {
				t.Fatalf("exit %d (want %d)\nstdout %q (want %q)\nstderr %q (want %q)", code, c.want, out, c.stdoutHas, errOut, c.stderrHas)
			}
		})
	}
}

func TestSinceTakesADurationATimeOrASequenceNumber(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in    string
		seq   uint64
		after time.Time
	}{
		{"", 0, time.Time{}},
		{"120", 120, time.Time{}},
		{"10m", 0, at.Add(-10 * time.Minute)},
		{"1h30m", 0, at.Add(-90 * time.Minute)},
		{"3d", 0, at.Add(-72 * time.Hour)},
		{"2026-03-01T03:00:00Z", 0, time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)},
		{"2026-03-01T04:00:00+01:00", 0, time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)},
		{"2026-03-01 03:00:00", 0, time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)},
		{"2026-02-28", 0, time.Date(2026, 2, 28, 0, 0, 0, 0, time.UTC)},
	}
	for _, c := range cases {
		seq, after, err := parseSince(c.in, at)
		if err != nil || seq != c.seq || !after.Equal(c.after) {
			t.Errorf("--since %q: %d %v %v, want %d %v", c.in, seq, after, err, c.seq, c.after)
		}
	}
	for _, bad := range []string{"soon", "0s", "-1h", "2026-13-01", "d"} {
		if _, _, err := parseSince(bad, at); err == nil {
			t.Errorf("--since %q accepted", bad)
		}
	}
}

// TestTokenFromAFile: --token-file and IHA_TOKEN_FILE carry the token
// (never printed), --token-file wins, IHA_TOKEN with IHA_TOKEN_FILE is
// refused as ambiguous, a file others can read is warned about, and a bad
// file is a usage error naming the file, not its content.
func TestTokenFromAFile(t *testing.T) {
	url := serveFixture(t, &fixture{})
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rw := write("rw", cliCanaryRW+"\n", 0o600)
	ro := write("ro", cliCanaryRO, 0o600)
	loose := write("loose", cliCanaryRO+"\n", 0o644)
	empty := write("empty", "\n", 0o600)
	twoLines := write("two", cliCanaryRO+"\nsecond-line-canary\n", 0o600)
	cases := []struct {
		name      string
		env       map[string]string
		args      []string
		want      int
		stderrHas string
	}{
		{"--token-file", nil, []string{"pause", "--token-file", rw}, exitOK, ""},
		{"IHA_TOKEN_FILE", map[string]string{"IHA_TOKEN_FILE": rw}, []string{"resume"}, exitOK, ""},
		{"--token-file wins over IHA_TOKEN", map[string]string{"IHA_TOKEN": cliCanaryRO}, []string{"pause", "--token-file", rw}, exitOK, ""},
		{"--token-file wins over IHA_TOKEN_FILE", map[string]string{"IHA_TOKEN_FILE": ro}, []string{"pause", "--token-file", rw}, exitOK, ""},
		{"the read token from a file may read", map[string]string{"IHA_TOKEN_FILE": ro}, []string{"events"}, exitOK, ""},
		{"the read token from a file may not change", map[string]string{"IHA_TOKEN_FILE": ro}, []string{"pause"}, exitUnhealthy, "403"},
		{"both variables", map[string]string{"IHA_TOKEN": cliCanaryRW, "IHA_TOKEN_FILE": rw}, []string{"pause"}, exitUsage, "both IHA_TOKEN and IHA_TOKEN_FILE are set"},
		{"a missing file", nil, []string{"events", "--token-file", filepath.Join(dir, "nope")}, exitUsage, "--token-file: open " + filepath.Join(dir, "nope")},
		{"an empty file", map[string]string{"IHA_TOKEN_FILE": empty}, []string{"events"}, exitUsage, "IHA_TOKEN_FILE: " + empty + " is empty"},
		{"two lines", nil, []string{"events", "--token-file", twoLines}, exitUsage, "holds more than one line"},
		{"a directory", nil, []string{"events", "--token-file", dir}, exitUsage, "is not a file"},
		{"a file others can read works, with a warning", nil, []string{"events", "--token-file", loose}, exitOK, "can be read by others (mode 0644): chmod 600"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"IHA_ADDR": url}
			for k, v := range c.env {
				env[k] = v
			}
			cliEnvWith(t, env)
			code, out, errOut := runCLI(t, c.args...) // runCLI fails on a printed token
			if code != c.want || !strings.Contains(errOut, c.stderrHas) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)\n%s", code, c.want, errOut, c.stderrHas, out)
			}
			if strings.Contains(out+errOut, "second-line-canary") {
				t.Fatal("a token file's content was printed")
			}
		})
	}
}

// TestCompletionScriptsSourcedByBash generates the scripts, sources the
// bash one in bash and completes with it (subcommands, -o values, host
// names asked from the API), and checks that zsh's and fish's are the
// scripts of those shells for iha.
func TestCompletionScriptsSourcedByBash(t *testing.T) {
	if _, err := os.Stat("/usr/share/bash-completion/bash_completion"); err != nil {
		t.Fatal("bash-completion is not installed: run scripts/install-test-deps.sh")
	}
	url := serveFixture(t, &fixture{})
	cliEnvWith(t, nil)
	scripts := map[string]string{}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, errOut := runCLI(t, "completion", sh)
		if code != exitOK || errOut != "" || len(out) < 1000 {
			t.Fatalf("iha completion %s: exit %d, %d bytes, stderr %q", sh, code, len(out), errOut)
		}
		scripts[sh] = out
	}
	if !strings.HasPrefix(scripts["zsh"], "#compdef iha") || !strings.Contains(scripts["fish"], "complete -c iha") {
		t.Fatalf("zsh or fish script is not for iha")
	}
	if code, _, _ := runCLI(t, "completion", "tcsh"); code != exitUsage {
		t.Fatalf("iha completion tcsh: exit %d, want 2", code)
	}
	file := filepath.Join(t.TempDir(), "iha.bash")
	if err := os.WriteFile(file, []byte(scripts["bash"]), 0o644); err != nil {
		t.Fatal(err)
	}
	// complete WORDS... prints what bash would offer for the last word.
	// Outside a real <TAB>, compopt refuses to run: a no-op stands in.
	prog := `source /usr/share/bash-completion/bash_completion || exit 8
source "$1"; shift
complete -p iha || exit 9
compopt() { :; }
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9
__start_iha
printf '%s\n' "${COMPREPLY[@]}"`
	cases := []struct {
		words []string
		want  []string
	}{
		{[]string{"iha", "ho"}, []string{"host", "hosts"}},
		{[]string{"iha", "hosts", "-o", ""}, []string{"table", "wide", "json", "yaml", "value"}},
		{[]string{"iha", "hosts", "-c", "ver"}, []string{"verdict"}},
		{[]string{"iha", "host", "compute-"}, []string{"compute-1", "compute-3", "compute-8", "compute-9"}},
		{[]string{"iha", "maintenance", "compute-3", ""}, []string{"on", "off"}},
		{[]string{"iha", "completion", ""}, []string{"bash", "zsh", "fish"}},
		{[]string{"iha", "controllers", "remove", ""}, []string{"ctl-1", "ctl-2", "ctl-3"}},
	}
	env := append(ihaOnPath(t), "IHA_ADDR="+url, "IHA_TOKEN="+cliCanaryRO, "IHA_TOKEN_FILE=")
	for _, c := range cases {
		t.Run(strings.Join(c.words, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), fencetest.Timeout(30*time.Second))
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", append([]string{"--norc", "--noprofile", "-c", prog, "bash", file}, c.words...)...)
			cmd.Env = env
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			if err := cmd.Run(); err != nil {
				t.Fatalf("bash: %v\n%s%s", err, out.String(), errOut.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if !strings.HasPrefix(lines[0], "complete ") || !strings.Contains(lines[0], "__start_iha iha") {
				t.Fatalf("the sourced script registered no completion for iha: %q", lines[0])
			}
			got := lines[1:]
			for i, g := range got {
				got[i], _, _ = strings.Cut(strings.TrimSpace(g), " ") // descriptions
			}
			slices.Sort(got)
			want := slices.Clone(c.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("completions %q, want %q\n%s", got, want, errOut.String())
			}
		})
	}
}

// TestManPagesRenderWithMan generates the man pages as the build does and
// renders each with man -l (man-db and groff, warnings on): one page per
// command, each with its name, synopsis, options and examples, and not a
// single warning.
func TestManPagesRenderWithMan(t *testing.T) {
	if _, err := exec.LookPath("man"); err != nil {
		t.Fatal("man is not installed: run scripts/install-test-deps.sh (man-db, groff-base)")
	}
	cliEnvWith(t, nil)
	dir := t.TempDir()
	code, out, errOut := runCLI(t, "docs", "man", "--dir", dir, "--date", "2026-03-01")
	if code != exitOK {
		t.Fatalf("iha docs man: exit %d\n%s%s", code, out, errOut)
	}
	_, list, _ := runCLI(t, "docs", "man", "--list")
	pages := strings.Fields(list)
	files, _ := filepath.Glob(filepath.Join(dir, "*.1"))
	if len(pages) != len(commands(t)) || len(files) != len(pages) {
		t.Fatalf("%d pages listed, %d written, %d commands", len(pages), len(files), len(commands(t)))
	}
	for _, c := range commands(t) {
		// Read what the page must show before the parallel subtests: cobra
		// computes a command's flag sets lazily, without a lock.
		name := strings.ReplaceAll(c.CommandPath(), " ", "-")
		short, hasFlags := c.Short, c.HasAvailableLocalFlags()
		t.Run(name, func(t *testing.T) {
			t.Parallel() // man-db takes about a second a page
			ctx, cancel := context.WithTimeout(context.Background(), fencetest.Timeout(30*time.Second))
			defer cancel()
			cmd := exec.CommandContext(ctx, "man", "--warnings", "-l", filepath.Join(dir, name+".1"))
			// LC_ALL=C: the ASCII device, where a non-ASCII character in a
			// help text is a warning (as on a server without a UTF-8 locale).
			cmd.Env = append(os.Environ(), "MANWIDTH=100", "MANPAGER=cat", "PAGER=cat", "LC_ALL=C")
			var rendered, warn bytes.Buffer
			cmd.Stdout, cmd.Stderr = &rendered, &warn
			if err := cmd.Run(); err != nil {
				t.Fatalf("man -l %s.1: %v\n%s", name, err, warn.String())
			}
			if warn.Len() > 0 {
				t.Errorf("man -l %s.1 warns:\n%s", name, warn.String())
			}
			page := strings.Join(strings.Fields(rendered.String()), " ") // man justifies
			for _, want := range []string{"NAME", name + " - " + short[:min(20, len(short))], "SYNOPSIS", "EXAMPLE", "Mar 2026"} {
				if !strings.Contains(page, want) {
					t.Errorf("man -l %s.1 lacks %q:\n%s", name, want, rendered.String())
				}
			}
			if hasFlags && !strings.Contains(page, "OPTIONS") {
				t.Errorf("man -l %s.1 has no OPTIONS", name)
			}
		})
	}
}
