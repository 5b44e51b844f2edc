#!/bin/sh
# Makes each rack's secret and tokens, once, before `kubectl apply -k`: in every secrets/
# folder under the given folders (default: beside this script), the files that are missing of
# rack.secret (32 random bytes, hex: what --rack-secret-file reads), admin.token and
# read-only.token (the Controller API's bearer tokens). Existing files are kept, so a rack keeps
# its credentials across applies. Mode 0600; git ignores them (secrets/.gitignore).
#
#   deploy/kubernetes/make-secrets.sh                      # the committed rack and fleet
#   deploy/kubernetes/make-secrets.sh my-fleet             # a fleet from gen_kubernetes.py
set -eu

random_hex() {
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

[ "$#" -gt 0 ] || set -- "$(dirname "$0")"
umask 077
for root in "$@"; do
    # A rack's folder holds its kustomization.yaml beside secrets/.
    find "$root" -type d -name secrets | sort | while read -r dir; do
        [ -f "$dir/../kustomization.yaml" ] || continue
        for name in rack.secret admin.token read-only.token; do
            if [ ! -e "$dir/$name" ]; then
                random_hex >"$dir/$name"
                echo >>"$dir/$name"
                echo "made $dir/$name"
            fi
        done
    done
done
