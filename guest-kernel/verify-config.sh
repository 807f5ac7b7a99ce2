#!/usr/bin/env bash
# Checks a built kernel .config against the guest-kernel config fragment:
# every "CONFIG_X=v" and "# CONFIG_X is not set" line of the fragment must
# hold in the .config, and every symbol it names must be defined by some
# Kconfig file of the source tree. Used by build.sh and by the Nix build
# (nix/guest-kernel.nix), so both builds check the same options.
#
# usage: guest-kernel/verify-config.sh FRAGMENT CONFIG SRCDIR
# Exit status: 0 when everything holds; 1 with the differences on stderr.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 FRAGMENT CONFIG SRCDIR" >&2; exit 2; }
log() { printf 'guest-kernel: %s\n' "$*" >&2; }

verify_config() { # fragment, config, srcdir
    local frag=$1 cfg=$2 srcdir=$3 line sym failed=() unknown=()
    local known
    known=$(find "$srcdir" -name 'Kconfig*' -type f -print0 \
        | xargs -0 sed -n 's/^[[:space:]]*\(menu\)\{0,1\}config[[:space:]]\{1,\}\([A-Za-z0-9_]\{1,\}\)[[:space:]]*$/\2/p' \
        | sort -u)
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        case "$line" in
            "# CONFIG_"*" is not set")
                sym=${line#\# CONFIG_}; sym=${sym%% *}
                if grep -q "^CONFIG_${sym}=" "$cfg"; then
                    failed+=("CONFIG_$sym: wanted not set, got '$(grep "^CONFIG_${sym}=" "$cfg")'")
                fi ;;
            CONFIG_*=*)
                sym=${line%%=*}; sym=${sym#CONFIG_}
                if ! grep -qxF -- "$line" "$cfg"; then
                    local got
                    got=$(grep -E "^CONFIG_${sym}=|^# CONFIG_${sym} is not set" "$cfg" || true)
                    failed+=("CONFIG_$sym: wanted '${line#*=}', got '${got:-absent (dependencies not met)}'")
                fi ;;
            ""|"#"*) continue ;;
            *) failed+=("unrecognised fragment line: '$line'"); continue ;;
        esac
        if ! grep -qxF -- "$sym" <<<"$known"; then
            unknown+=("CONFIG_$sym")
        fi
    done <"$frag"
    if [ ${#unknown[@]} -gt 0 ]; then
        log "symbols not defined by any Kconfig in this source: ${unknown[*]}"
    fi
    if [ ${#failed[@]} -gt 0 ]; then
        log "these fragment settings did not stick after 'make olddefconfig':"
        printf '  %s\n' "${failed[@]}" >&2
    fi
    [ ${#unknown[@]} -eq 0 ] && [ ${#failed[@]} -eq 0 ]
}
verify_config "$1" "$2" "$3"
