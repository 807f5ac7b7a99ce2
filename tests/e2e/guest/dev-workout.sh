#!/bin/sh
# Runs in a managed VM whose root is the host's (so git, cc and make are
# the host's own), in its copy-on-write /project: a git repository and a
# small C build, as a developer would. Every check prints
#   MVM-GUEST: dev_<check>=<value>
# for the host-side test (tests/e2e/nested/fs.rs). tests/e2e/jobs/fs.sh
# copies it into the project folder: the guest never sees the checkout.
say() { echo "MVM-GUEST: dev_$1=$2"; }
cd /project || exit 1
export GIT_AUTHOR_NAME=mvm GIT_AUTHOR_EMAIL=mvm@example.invalid
export GIT_COMMITTER_NAME=mvm GIT_COMMITTER_EMAIL=mvm@example.invalid
g() { git -c init.defaultBranch=main -c core.fsync=all "$@"; }

say git "$(command -v git >/dev/null && echo present || echo missing)"
g init -q . && g add -A && g commit -qm "initial import" && say init ok
say tracked "$(g ls-files | tr '\n' ' ')"
echo "edited in the guest" >>notes.txt
say status "$(g status --porcelain | tr '\n' '|')"
g checkout -q -b feature && g commit -qam "feature edit" && say branch ok
say feature_notes "$(tail -n1 notes.txt)"
g checkout -q main && say checkout ok
say main_notes "$(tr '\n' '|' <notes.txt)"
say clean "$(g status --porcelain | wc -l)"
say log "$(g log --oneline --all | wc -l)"
say fsck "$(g fsck --no-progress 2>&1 | grep -c -i error)"

# A small build: cc through make; the binary runs.
make -s >/tmp/make.log 2>&1 && say make ok || say make "failed: $(tr '\n' '|' </tmp/make.log)"
say run "$(./hello)"
say ignored "$(g status --porcelain --ignored | tr '\n' '|')"
sync
