#!/usr/bin/env bash
# ok and fail always succeed, so `test && ok … || fail …` is an if/else.
# shellcheck disable=SC2015,SC2001
# scripts/package-check.sh DIR — checks the RPMs (and .debs, when present)
# that deploy/nfpm/build.sh wrote to DIR, with Debian's rpm tools and
# systemd-analyze, as issue 7's "Done when" asks:
#   - rpm -qpl lists exactly the expected files, rpm -qpc the config files
#     (all %config(noreplace)); modes and owners of secrets and DATA_DIR;
#   - rpm -qp --scripts creates the user, reloads systemd, and never
#     starts, restarts, enables or stops a service;
#   - the packages install into a scratch root (rpm -i --root --nodeps
#     --noscripts: the scriptlets need a real OS in the root, /bin/sh,
#     useradd) and the installed binaries print their version;
#   - systemd-analyze verify accepts the installed units and the
#     nova-compute drop-in with no warning at all;
#   - the agent binary holds no Nova or BMC client code (go version -m);
#     the leader's does (so that the check is seen to work);
#   - the iha package has a man page per command, each rendered by man -l
#     without a warning, and a bash completion that bash-completion loads
#     by itself and that completes.
# Environment: ARCH (rpm arch, default x86_64), EXPECT_VERSION (what
# `--version` must print, default deploy/nfpm/version.sh), GO (go),
# KEEP_ROOT=1 keeps the scratch root. Exit 0 when every check passes; every
# failure is printed as "FAIL: …".
set -uo pipefail

dir=${1:?usage: scripts/package-check.sh DIR}
root_repo=$(cd "$(dirname "$0")/.." && pwd)
ARCH=${ARCH:-x86_64}
GO=${GO:-go}
EXPECT_VERSION=${EXPECT_VERSION:-$(cd "$root_repo" && deploy/nfpm/version.sh version)}
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok:   $*"; }
export LC_ALL=C

for tool in rpm systemd-analyze "$GO"; do
	command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (scripts/install-test-deps.sh installs rpm and systemd)"; exit 1; }
done

# one_rpm NAME: the single NAME-<version>-<release>.ARCH.rpm in DIR.
one_rpm() {
	local found=() f n
	for f in "$dir"/*."$ARCH".rpm; do
		[ -e "$f" ] || continue
		n=$(rpm -qp --qf '%{NAME}' "$f" 2>/dev/null)
		[ "$n" = "$1" ] && found+=("$f")
	done
	if [ ${#found[@]} -ne 1 ]; then
		fail "$1: want exactly one $ARCH rpm in $dir, found ${#found[@]}"
		return 1
	fi
	echo "${found[0]}"
}

# same LABEL WANT GOT: compare two newline-separated sorted lists.
same() {
	if [ "$2" = "$3" ]; then ok "$1"; else
		fail "$1"; diff <(echo "$2") <(echo "$3") | sed 's/^/      /'
	fi
}

agent_files='/etc/iha
/etc/iha/agent.yaml
/usr/bin/iha-agent
/usr/lib/systemd/system/edpm_nova_compute.service.d/iha-gate.conf
/usr/lib/systemd/system/iha-agent.service
/usr/lib/systemd/system/nova-compute.service.d/iha-gate.conf
/usr/lib/systemd/system/openstack-nova-compute.service.d/iha-gate.conf
/usr/lib/sysusers.d/iha.conf
/usr/share/doc/iha-agent/operations.md'
leader_files='/etc/iha
/etc/iha/clouds.yaml
/etc/iha/config.yaml
/etc/iha/fencing.yaml
/etc/iha/secure.yaml
/usr/bin/iha-leader
/usr/lib/systemd/system/iha-leader.service
/usr/lib/sysusers.d/iha.conf
/usr/share/doc/iha-leader/config-reference.md
/usr/share/doc/iha-leader/operations.md
/var/lib/iha'
# The iha package: the binary, its man pages (one per command: what
# `iha docs man --list` of this tree names) and its shell completions.
man_pages=$(cd "$root_repo" && "$GO" run ./cmd/iha docs man --list 2>/dev/null | sed 's|^|/usr/share/man/man1/|; s|$|.gz|')
[ -n "$man_pages" ] || fail "iha docs man --list printed nothing: the expected man pages are unknown"
cli_files=$(printf '%s\n' /usr/bin/iha /usr/share/doc/iha/operations.md \
	/usr/share/bash-completion/completions/iha /usr/share/zsh/site-functions/_iha \
	/usr/share/fish/vendor_completions.d/iha.fish "$man_pages" | sort)

rpms=()
for spec in "iha-agent|$agent_files|/etc/iha/agent.yaml" \
	"iha-leader|$leader_files|/etc/iha/clouds.yaml
/etc/iha/config.yaml
/etc/iha/fencing.yaml
/etc/iha/secure.yaml" "iha|$cli_files|"; do
	IFS='|' read -r -d '' name files configs <<<"$spec"
	configs=${configs%$'\n'}
	f=$(one_rpm "$name") || continue
	rpms+=("$f")
	echo "== $name: $(basename "$f")"
	same "$name: rpm -qpl lists the expected files" "$files" "$(rpm -qpl "$f" | sort)"
	same "$name: rpm -qpc lists the config files" "$configs" "$(rpm -qpc "$f" 2>/dev/null | grep -v '^(contains no files)$' | sort)"
	# Every config file is %config(noreplace): upgrades keep local changes.
	bad=$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$f" | awk '$2 ~ /c/ && $2 !~ /n/ {print $1}')
	[ -z "$bad" ] && ok "$name: config files are noreplace" || fail "$name: config files without noreplace: $bad"
	scripts=$(rpm -qp --scripts "$f")
	if echo "$scripts" | grep -Eiq 'systemctl[^#]*(start|restart|reload-or|try-|enable|disable|stop|kill|isolate)|service +[a-z-]+ +(start|restart|stop)|invoke-rc\.d|deb-systemd-invoke'; then
		fail "$name: a scriptlet starts, restarts, enables or stops a service:"
		echo "$scripts" | grep -Ein 'systemctl|service |invoke-rc|deb-systemd' | sed 's/^/      /'
	else
		ok "$name: no scriptlet starts, restarts, enables or stops a service"
	fi
	if [ "$name" != iha ]; then
		echo "$scripts" | grep -q 'systemctl daemon-reload' && ok "$name: post-install reloads systemd" || fail "$name: no systemctl daemon-reload in the scriptlets"
		echo "$scripts" | grep -q 'useradd --system' && ok "$name: pre-install creates the system user iha" || fail "$name: no useradd of the system user iha"
	fi
	want_version=$(cd "$root_repo" && deploy/nfpm/version.sh package)
	got_version=$(rpm -qp --qf '%{VERSION}' "$f")
	[ "$got_version" = "$want_version" ] && ok "$name: version $got_version from git" || fail "$name: version $got_version, want $want_version"
done

# Modes and owners that keep secrets secret.
if f=$(one_rpm iha-leader 2>/dev/null); then
	got=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\n]' "$f" | grep -E ' (/var/lib/iha|/etc/iha/(secure|fencing|clouds|config)\.yaml)$' | sort -k4)
	want='-rw-r----- root iha /etc/iha/clouds.yaml
-rw-r----- root iha /etc/iha/config.yaml
-rw-r----- root iha /etc/iha/fencing.yaml
-rw-r----- root iha /etc/iha/secure.yaml
drwxr-x--- iha iha /var/lib/iha'
	same "iha-leader: secrets are 0640 root:iha, DATA_DIR 0750 iha:iha" "$want" "$got"
fi

# Install into a scratch root, as a usr-merged OS would have it.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/iha-pkgcheck.XXXXXX")
[ "${KEEP_ROOT:-}" = 1 ] && echo "scratch root: $scratch" || trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/usr/bin" "$scratch/usr/sbin" "$scratch/usr/lib"
ln -s usr/bin "$scratch/bin"; ln -s usr/sbin "$scratch/sbin"; ln -s usr/lib "$scratch/lib"
if [ ${#rpms[@]} -gt 0 ] && rpm --root "$scratch" --initdb &&
	out=$(rpm -i --root "$scratch" --nodeps --noscripts "${rpms[@]}" 2>&1); then
	ok "rpm -i --root --nodeps --noscripts installs ${#rpms[@]} packages"
	n=$(rpm -qa --root "$scratch" | wc -l)
	[ "$n" -eq ${#rpms[@]} ] && ok "rpm -qa --root lists $n packages" || fail "rpm -qa --root lists $n packages, want ${#rpms[@]}"
else
	fail "rpm -i --root failed: ${out:-no packages}"
fi

for b in "iha-agent --version" "iha-leader -version"; do
	read -r cmd flag <<<"$b"
	if got=$("$scratch/usr/bin/$cmd" "$flag" 2>&1) && [[ "$got" == "$cmd $EXPECT_VERSION"* ]]; then
		ok "installed $cmd $flag: $got"
	else
		fail "installed $cmd $flag printed \"$got\", want \"$cmd $EXPECT_VERSION…\""
	fi
done

# The installed iha's man pages render (man-db, groff warnings on), and
# bash-completion finds and loads its completion script by itself.
if command -v man >/dev/null && [ -x "$scratch/usr/bin/iha" ]; then
	bad=""
	n=0
	for page in "$scratch"/usr/share/man/man1/iha*.1.gz; do
		[ -e "$page" ] || continue
		n=$((n + 1))
		out=$(MANWIDTH=100 MANPAGER=cat man --warnings -l "$page" 2>&1 >/dev/null) || bad="$bad $(basename "$page"): exit $?"
		[ -z "$out" ] || bad="$bad $(basename "$page"): $out"
	done
	[ -z "$bad" ] && [ "$n" -gt 0 ] && ok "iha: man -l renders its $n man pages without a warning" || fail "iha: man pages:${bad:- none installed}"
else
	fail "man is not installed (scripts/install-test-deps.sh installs man-db), or iha was not installed"
fi
if [ -f /usr/share/bash-completion/bash_completion ] && [ -x "$scratch/usr/bin/iha" ]; then
	got=$(env -i HOME=/nonexistent PATH="$scratch/usr/bin:/usr/bin:/bin" XDG_DATA_DIRS="$scratch/usr/share" bash --norc --noprofile -c '
		source /usr/share/bash-completion/bash_completion
		__load_completion iha || { echo "not found"; exit 1; }
		compopt() { :; }
		COMP_WORDS=(iha ho); COMP_CWORD=1; COMP_LINE="iha ho"; COMP_POINT=6; COMP_TYPE=9
		__start_iha; echo "${COMPREPLY[*]}"' 2>&1)
	[ "$got" = "host hosts" ] && ok "iha: bash-completion loads the installed script; 'iha ho<TAB>' offers host hosts" || fail "iha: bash completion with the installed script printed \"$got\", want \"host hosts\""
else
	fail "bash-completion is not installed (scripts/install-test-deps.sh installs it), or iha was not installed"
fi

# systemd-analyze verify: the units, and the gate drop-in applied to a
# stand-in nova-compute. The root gets the OS's own units (targets) and
# the two commands the units use besides ours.
units="$scratch/usr/lib/systemd/system"
mkdir -p "$units"
for u in /usr/lib/systemd/system/*.target /usr/lib/systemd/system/*.slice /usr/lib/systemd/system/*.socket; do
	[ -e "$units/$(basename "$u")" ] || cp -a "$u" "$units/"
done
cp /bin/kill /bin/sleep "$scratch/usr/bin/" 2>/dev/null
printf '[Unit]\nDescription=stand-in for nova-compute\n[Service]\nExecStart=/bin/sleep infinity\n' >"$units/nova-compute.service"
out=$(systemd-analyze verify --root="$scratch" iha-agent.service iha-leader.service nova-compute.service 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then
	ok "systemd-analyze verify accepts iha-agent.service, iha-leader.service and the nova-compute drop-in"
else
	fail "systemd-analyze verify (exit $rc):"; echo "$out" | sed 's/^/      /'
fi
gate=$(systemd-analyze cat-config --root="$scratch" systemd/system/nova-compute.service 2>/dev/null | grep -c '^ExecStartPre=+/usr/bin/iha-agent gate')
[ "$gate" -ge 1 ] && ok "nova-compute.service runs iha-agent gate first" || fail "nova-compute.service has no ExecStartPre=+/usr/bin/iha-agent gate"
for u in iha-agent iha-leader; do
	exp=$(systemd-analyze security --offline=true --root="$scratch" "$u.service" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
	echo "info: systemd-analyze security $u.service: exposure ${exp:-?} (0 best, 10 worst)"
done

# No Nova or BMC client code on computes.
forbidden='gophercloud|stmcginnis/gofish|bougou/go-ipmi|k8s\.io/client-go'
if mods=$("$GO" version -m "$scratch/usr/bin/iha-agent" 2>&1); then
	hits=$(echo "$mods" | grep -E "$forbidden")
	[ -z "$hits" ] && ok "iha-agent has no Nova or BMC client code ($(echo "$mods" | grep -c $'^\tdep') modules)" || { fail "iha-agent links Nova or BMC client code:"; echo "$hits" | sed 's/^/      /'; }
else
	fail "go version -m iha-agent: $mods"
fi
if "$GO" version -m "$scratch/usr/bin/iha-leader" 2>/dev/null | grep -Eq "$forbidden"; then
	ok "iha-leader does link Nova client code (the check above can see it)"
else
	fail "go version -m finds no Nova client in iha-leader: the agent check proves nothing"
fi

# .debs, when built: contents and conffiles.
for deb in "$dir"/*.deb; do
	[ -e "$deb" ] || continue
	command -v dpkg-deb >/dev/null || break
	name=$(dpkg-deb -f "$deb" Package)
	case $name in
	iha-agent) want="$agent_files" ;; iha-leader) want="$leader_files" ;; iha) want="$cli_files" ;; *) continue ;;
	esac
	got=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|; s|/$||' | grep -v '^$' | grep -vxE '/|/etc|/usr|/usr/bin|/usr/lib|/usr/lib/systemd|/usr/lib/systemd/system|/usr/lib/sysusers.d|/usr/share|/usr/share/doc|/var|/var/lib|/usr/lib/systemd/system/[a-z_-]+\.service\.d|/usr/share/doc/[a-z-]+|/usr/share/man|/usr/share/man/man1|/usr/share/bash-completion|/usr/share/bash-completion/completions|/usr/share/zsh|/usr/share/zsh/vendor-completions|/usr/share/fish|/usr/share/fish/vendor_completions.d' | sort)
	# zsh's directory on Debian is vendor-completions (site-functions on RPM systems).
	want=$(echo "$want" | sed 's|^/usr/share/zsh/site-functions/_iha$|/usr/share/zsh/vendor-completions/_iha|' | sort)
	same "$name.deb: dpkg-deb -c lists the expected files" "$(echo "$want" | grep -vx '/etc/iha' | grep -vE '\.service\.d$')" "$(echo "$got" | grep -vx '/etc/iha')"
	conf=$(dpkg-deb -f "$deb" >/dev/null; dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles 2>/dev/null | sort)
	case $name in
	iha-agent) want=/etc/iha/agent.yaml ;; iha-leader) want=$(rpm -qpc "$(one_rpm iha-leader)" | sort) ;; *) want= ;;
	esac
	same "$name.deb: conffiles" "$want" "$conf"
done

echo
if [ $fails -eq 0 ]; then echo "package-check: every check passed"; else echo "package-check: $fails check(s) failed"; fi
[ $fails -eq 0 ]
