#!/bin/sh
# L2 job: the four example projects, each from a clean state with one
# command (`mvm up` in its folder): the service answers through its
# forwarded port, host edits reach the dev server, guest writes stay in the
# VM, the DB example's tests pass in the VM, `mvm down` leaves nothing
# running; three copies of one folder up at once, each answering through
# its own host port. Also records `mvm up` -> first HTTP answer of the
# Node.js example and its VMM's memory (benches/jobs/nested-project-up.sh
# measures them against node started directly on the host).
# Steps leave $MVM_OUT/proj/<step>.{out,err,status}; numbers in *.ms/*.kib.
set -u
: "${MVM_BIN:?}" "${KERNEL:?}" "${MVM_INIT:?}" "${E2E_DIR:?}"
OUT="$MVM_OUT/proj"
mkdir -p "$OUT"
export MVM_HOME=/tmp/mvm-proj-home MVM_KERNEL="$KERNEL" MVM_INIT="$MVM_INIT"
rm -rf "$MVM_HOME"
EX=/tmp/proj-examples
rm -rf "$EX" && cp -r "$E2E_DIR/../../examples" "$EX"

rec() {
    step=$1
    shift
    echo "MVM-JOB: proj $step: $*"
    "$@" >"$OUT/$step.out" 2>"$OUT/$step.err"
    echo $? >"$OUT/$step.status"
}
m() { timeout -k 30 600 "$MVM_BIN" "$@"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# Retries URL until it answers 2xx and (optionally) contains TEXT.
poll() {
    url=$1 text=${2:-} secs=${3:-120}
    end=$(($(date +%s) + secs))
    while [ "$(date +%s)" -lt "$end" ]; do
        body=$(curl -sf --max-time 5 "$url") && case "$body" in *"$text"*)
            printf '%s\n' "$body"
            return 0
            ;;
        esac
        sleep 0.2
    done
    curl -s --max-time 5 "$url"
    return 1
}
vmms() { ps -eo args | grep -c "[_]vmm $MVM_HOME/vms/$1\$"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# What a VM's services and console said, for failures (before `down`).
diag() {
    m service "$1" >"$OUT/$1-services" 2>&1
    for s in web db cache worker; do
        m logs "$1" --service "$s" >"$OUT/$1-log-$s" 2>&1
    done
    cp "$MVM_HOME/vms/$1/console.log" "$OUT/$1-console.log" 2>/dev/null
}

# Port forwards and the bridge need these (L2 cannot autoload modules).
sh "$E2E_DIR/../nested/load-net-modules.sh"

# --- the guest root is a system view: L2's secrets stay on L2 -----------
# Planted as root on L2: in /root, in a home, in /etc (shadow, sudoers.d,
# an SSH host key). A project VM (with ~/.npmrc shared on request)
# must not read any of them, while the host's python3 and the project work.
echo "ROOT_SECRET_MVM" >/root/mvm-secret.txt
mkdir -p /home/alice/.ssh
echo "ALICE_SECRET_MVM" >/home/alice/.ssh/id_ed25519
echo "shadowuser:SHADOW_SECRET_MVM:19000:0:99999:7:::" >>/etc/shadow
mkdir -p /etc/sudoers.d /etc/ssh
echo "# SUDO_SECRET_MVM" >/etc/sudoers.d/mvm-test
echo "HOSTKEY_SECRET_MVM" >/etc/ssh/ssh_host_mvmtest_key
echo "registry=http://l2.example/" >/root/.npmrc
ISO=/tmp/iso-project
rm -rf "$ISO" && mkdir -p "$ISO" && echo "project file" >"$ISO/hello.txt"
cat >"$ISO/probe.sh" <<'SH'
for p in /root/mvm-secret.txt /home/alice/.ssh/id_ed25519 /home/alice \
    /etc/shadow /etc/sudoers.d/mvm-test /etc/ssh/ssh_host_mvmtest_key; do
    if [ -e "$p" ] || cat "$p" >/dev/null 2>&1; then echo "VISIBLE $p"; else echo "absent $p"; fi
done
grep -rl _SECRET_MVM /root /home /etc 2>/dev/null | sed 's/^/FOUND /'
echo "root: $(ls -A /root | tr '\n' ' ')"
echo "home: $(ls -A /home | tr '\n' ' ')"
echo "npmrc: $(cat /root/.npmrc)"
echo "python3: $(python3 -c 'print(1)')"
echo "project: $(cat /project/hello.txt)"
SH
rec iso-run m run --no-net --project "$ISO" --share-home /root/.npmrc -- sh /project/probe.sh
rec iso-plain m run --no-net --project "$ISO" -- sh -c 'ls -A /root; cat /root/.npmrc'
rm -f /root/.npmrc

# --- node-web: detected from package.json (no mvm.toml) -----------------
cd "$EX/node-web"
rec node-dry m up --dry-run
t0=$(now_ms)
# A host variable passed through by pattern: it must reach the service and
# execs, and never the console log.
export MVM_DEMO_TOKEN=s3cret-from-l2
rec node-up m up --env-host 'MVM_DEMO_*'
rec node-http poll http://127.0.0.1:3000/ "hello from node-web"
echo $(($(now_ms) - t0)) >"$OUT/node-up-http-1.ms"
rss_kib "$(cat "$MVM_HOME/vms/node-web/pid")" >"$OUT/node-vmm-1.kib"
echo "changed on the host" >page.txt
rec node-edit poll http://127.0.0.1:3000/ "changed on the host" 30
rec node-guest-write m exec node-web -- sh -c 'echo guest >/project/guest-wrote.txt && echo guest >>/project/page.txt && cat /project/page.txt'
ls -A >"$OUT/node-host-ls"
cp page.txt "$OUT/node-host-page"
rec node-list m list --json
rec node-env m exec node-web -- sh -c 'echo "exec:$MVM_DEMO_TOKEN"; tr "\0" "\n" </proc/$(pgrep -f "node server.js" | head -1)/environ | grep MVM_DEMO_TOKEN'
grep -c "s3cret-from-l2" "$MVM_HOME/vms/node-web/console.log" "$MVM_HOME/vms/node-web/vm.toml" >"$OUT/node-secret-count"
diag node-web
rec node-down m down
vmms node-web >"$OUT/node-vmms-left"
rec node-after-down curl -s --max-time 5 http://127.0.0.1:3000/
rec node-rm m down --rm

# --- django-app: the dev server reloads on a host edit --------------------
cd "$EX/django-app"
rec dj-up m up
rec dj-http poll http://127.0.0.1:8000/ "hello from django" 300
# Django's StatReloader notices a change only against its own first
# snapshot of the files' times, taken some seconds after the server starts
# answering (much later under emulation): an edit before that is its
# baseline, on any host. Give it time, then edit as a user would.
sleep 30
sed -i 's/hello from django/hello edited on the host/' webapp/views.py
rec dj-edit poll http://127.0.0.1:8000/ "hello edited on the host" 300
rec dj-guest-write m exec django-app -- sh -c 'echo guest >/project/guest-wrote.txt && python3 -c "import webapp.views" && ls /project'
ls -A . webapp >"$OUT/dj-host-ls"
diag django-app
rec dj-down m down
vmms django-app >"$OUT/dj-vmms-left"
m down --rm >/dev/null 2>&1

# --- db-testing: the test suite against PostgreSQL in the VM --------------
cd "$EX/db-testing"
rec db-up m up
rec db-tests m exec db-testing -- python3 -m unittest -v
# A test added on the host runs in the VM; a file the guest writes stays there.
cat >tests/test_host_added.py <<'PY'
import os
import unittest

import psycopg2


class HostAddedTest(unittest.TestCase):
    def test_added_on_the_host(self):
        conn = psycopg2.connect(os.environ["DATABASE_URL"])
        cur = conn.cursor()
        cur.execute("SELECT 40 + 2")
        self.assertEqual(cur.fetchone()[0], 42)
        conn.close()
PY
rec db-tests2 m exec db-testing -- python3 -m unittest -v
rec db-guest-write m exec db-testing -- sh -c 'echo guest >/project/guest-wrote.txt && ls /project'
# The database is on the project's volume: ext4 on a virtio disk, its root
# given to postgres when formatted; a row committed now outlives down/up.
rec db-volume m exec db-testing -- sh -c 'stat -c "%U %a" /var/lib/postgresql; grep " /var/lib/postgresql " /proc/mounts'
rec db-keep m exec db-testing -- python3 -c "import os, psycopg2; c = psycopg2.connect(os.environ['DATABASE_URL']); c.autocommit = True; c.cursor().execute(\"CREATE TABLE kept AS SELECT 'survives down' AS v\")"
diag db-testing
rec db-down m down
vmms db-testing >"$OUT/db-vmms-left"
ls -A >"$OUT/db-host-ls"
rec db-up2 m up
rec db-kept m exec db-testing -- python3 -c "import os, psycopg2; cur = psycopg2.connect(os.environ['DATABASE_URL']).cursor(); cur.execute('SELECT v FROM kept'); print(cur.fetchone()[0])"
m down --rm >/dev/null 2>&1
rec db-vol-after-rm m volume list
m volume rm db-testing-pg >/dev/null 2>&1

# --- multi-service: web -> cache -> worker -> db -> cache -> web ----------
cd "$EX/multi-service"
rec ms-up m up
rec ms-status m service multi-service
rec ms-web poll http://127.0.0.1:8080/ "worker=ready" 300
rec ms-enqueue curl -sf --max-time 10 "http://127.0.0.1:8080/enqueue?n=7"
rec ms-result poll "http://127.0.0.1:8080/result?n=7" "49" 60
# The worker's code edited on the host: the restarted service runs it; the
# guest's own write stays in the VM.
sed -i 's/f"{n}^2=/f"{n} squared is /' worker.py
rec ms-restart m service multi-service restart worker
rec ms-enqueue2 curl -sf --max-time 10 "http://127.0.0.1:8080/enqueue?n=8"
rec ms-result2 poll "http://127.0.0.1:8080/result?n=8" "8 squared is 64" 120
rec ms-guest-write m exec multi-service -- sh -c 'echo guest >/project/guest-wrote.txt'
ls -A >"$OUT/ms-host-ls"
diag multi-service
rec ms-down m down
vmms multi-service >"$OUT/ms-vmms-left"
m down --rm >/dev/null 2>&1

# --- copies: three VMs of one folder at once, each through its own port --
# node-web with a small mvm.toml (declared port 3100): the first copy takes
# it, `mvm up --name web-2/web-3` move to free ones (said on stderr). Each
# copy writes its own page in its own upper layer, so an answer names the
# copy that served it.
CP=/tmp/proj-copies
rm -rf "$CP" && cp -r "$E2E_DIR/../../examples/node-web" "$CP"
cat >"$CP/mvm.toml" <<'TOML'
name = "web"
memory = "384M"
cpus = 1
ports = ["3100:3000"]

[services.web]
command = "node server.js"
env = { HOST = "0.0.0.0", PORT = "3000" }
ready = { port = 3000 }
TOML
cd "$CP"
for c in web web-2 web-3; do
    rec "copies-up-$c" m up --name "$c" --timeout 300
done
rec copies-list m list --json
for c in web web-2 web-3; do
    rec "copies-port-$c" m port "$c"
    port=$(sed -n 's/^127\.0\.0\.1:\([0-9]*\)->3000\/tcp$/\1/p' "$OUT/copies-port-$c.out")
    echo "$port" >"$OUT/copies-hostport-$c"
    rec "copies-page-$c" m exec "$c" -- sh -c "echo 'served by $c' >/project/page.txt"
    rec "copies-http-$c" poll "http://127.0.0.1:${port:-1}/" "served by $c" 60
done
# direnv's exports for a copy: its own MVM_PORT_3000.
rec copies-direnv m direnv --enter --name web-2 --shell-pid $$
cp page.txt "$OUT/copies-host-page"
for c in web web-2 web-3; do
    diag "$c"
done
for c in web-3 web-2 web; do
    rec "copies-down-$c" m down --name "$c" --rm
    vmms "$c" >"$OUT/copies-vmms-left-$c"
done

ps -eo args | grep -c "[_]vmm " >"$OUT/vmms-left"
ls -A "$MVM_HOME/vms" >"$OUT/vms-left" 2>&1
kill "$(cat "$MVM_HOME/net/netd.pid" 2>/dev/null)" 2>/dev/null
cp "$MVM_HOME/net/netd.log" "$OUT/netd.log" 2>/dev/null
exit 0
