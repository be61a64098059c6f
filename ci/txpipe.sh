#!/bin/sh
# txpipe's CI step: send a file to a pipe's receivers, or receive it, with
# curl.  The GitHub Action (action.yml) runs this file; the GitLab CI
# component (templates/txpipe.yml) carries this same text inline (GitLab
# runs a component's job in the user's project, where no file of ours is
# checked out; docs/test_recipes.py checks that the two are the same).
# POSIX sh and curl 7.76 or later (--fail-with-body), nothing else.
#
# Configured by the environment:
#   TXPIPE_MODE      send or receive
#   TXPIPE_URL       the pipe URL, http(s)://HOST/api/v1/pipe/PATH, maybe
#                    signed (then its n and min are in it already)
#   TXPIPE_PATH      the file to send, or to write
#   TXPIPE_N         the number of receivers, added to the URL's query
#   TXPIPE_MIN       the quorum: the transfer starts with this many at the
#                    server's wait deadline (added to the query)
#   TXPIPE_NAME      this receiver's name in the sender's lines (at most 64
#                    printable characters; longer is cut)
#   TXPIPE_TOKEN     a bearer token (an OIDC ID token) to authenticate with
#   TXPIPE_GITHUB_AUDIENCE
#                    without TXPIPE_TOKEN: ask GitHub Actions for an ID token
#                    for this audience (the job needs id-token: write)
#
# The exit status: 0 when sent (txpipe's closing line is "[INFO] done: ...
# receivers=R/N" with R = N, or R >= TXPIPE_MIN) or received; 1 when the
# transfer failed or was refused (txpipe's "[ERROR] ..." line says why); 2
# when the configuration is wrong.
set -eu

say() { printf 'txpipe: %s\n' "$*" >&2; }
usage_error() {
    say "$*"
    exit 2
}

mode=${TXPIPE_MODE:-}
url=${TXPIPE_URL:-}
path=${TXPIPE_PATH:-}
case $mode in
send | receive) ;;
*) usage_error "TXPIPE_MODE must be send or receive, got '$mode'" ;;
esac
[ -n "$url" ] || usage_error "TXPIPE_URL is empty"
[ -n "$path" ] || usage_error "TXPIPE_PATH is empty"
if [ "$mode" = send ] && [ ! -r "$path" ]; then
    usage_error "cannot read $path"
fi

# n and min go into the query (a signature covers them: a signed URL has
# its own, and giving them again is an error).
for pair in "n=${TXPIPE_N:-}" "min=${TXPIPE_MIN:-}"; do
    name=${pair%%=*}
    value=${pair#*=}
    [ -n "$value" ] || continue
    case $value in
    *[!0-9]* | 0*) usage_error "$name must be a whole number from 1, got '$value'" ;;
    esac
    case $url in
    *[?\&]"$name"=*) usage_error "the URL has $name already; leave TXPIPE_$(echo "$name" | tr '[:lower:]' '[:upper:]') empty" ;;
    *\?*) url="$url&$name=$value" ;;
    *) url="$url?$name=$value" ;;
    esac
done
# What the closing line is checked against.
query_number() {
    printf '%s\n' "$url" | sed -n "s/.*[?&]$1=\([0-9][0-9]*\).*/\1/p"
}
n=$(query_number n)
n=${n:-1}
quorum=$(query_number min)
quorum=${quorum:-$n}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# Headers go to curl from a file (mode 0600), not its command line.
umask 077
: >"$scratch/headers"

token=${TXPIPE_TOKEN:-}
if [ -z "$token" ] && [ -n "${TXPIPE_GITHUB_AUDIENCE:-}" ]; then
    if [ -z "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" ] || [ -z "${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-}" ]; then
        usage_error "no GitHub ID token to ask for: give the job 'permissions: id-token: write'"
    fi
    printf 'Authorization: bearer %s\n' "$ACTIONS_ID_TOKEN_REQUEST_TOKEN" >"$scratch/request"
    if ! curl -fsS -G -H "@$scratch/request" --data-urlencode "audience=$TXPIPE_GITHUB_AUDIENCE" \
        "$ACTIONS_ID_TOKEN_REQUEST_URL" >"$scratch/token.json"; then
        say "GitHub refused the ID token request"
        exit 1
    fi
    token=$(sed -n 's/.*"value"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$scratch/token.json")
    [ -n "$token" ] || {
        say "GitHub's answer holds no ID token"
        exit 1
    }
    # Keep the token out of the job's log.
    [ "${GITHUB_ACTIONS:-}" != true ] || echo "::add-mask::$token"
fi
[ -z "$token" ] || printf 'Authorization: Bearer %s\n' "$token" >>"$scratch/headers"

if [ "$mode" = receive ] && [ -n "${TXPIPE_NAME:-}" ]; then
    # Printable ASCII only, at most 64 characters: the server refuses others.
    receiver=$(printf '%s' "$TXPIPE_NAME" | tr -cd '\040-\176' | cut -c 1-64)
    printf 'Txpipe-Receiver: %s\n' "$receiver" >>"$scratch/headers"
fi

# The URL without its signature, for the log.
shown=$(printf '%s\n' "$url" | sed 's/\([?&]sig=\)[^&]*/\1.../')

if [ "$mode" = receive ]; then
    say "receiving $shown into $path"
    status=0
    curl -sS --fail-with-body -H "@$scratch/headers" -o "$path" "$url" || status=$?
    if [ "$status" -ne 0 ]; then
        # A refusal's body is txpipe's one [ERROR] line, now in the file.
        if [ -f "$path" ] && [ "$(wc -c <"$path")" -le 1024 ]; then
            cat "$path" >&2
        fi
        rm -f "$path"
        say "not received (curl exit status $status)"
        exit 1
    fi
    say "received $(wc -c <"$path" | tr -d ' ') bytes into $path"
    exit 0
fi

say "sending $path to $shown (n=$n, min=$quorum)"
# txpipe's lines reach the log as they come (-N), and a copy is kept for
# the closing line; curl's status travels through a file (no pipefail in sh).
{
    status=0
    curl -sS -N --fail-with-body -H "@$scratch/headers" -T "$path" "$url" || status=$?
    echo "$status" >"$scratch/status"
} | tee "$scratch/lines"
status=$(cat "$scratch/status")
last=$(tail -n 1 "$scratch/lines")
if [ -n "${GITHUB_OUTPUT:-}" ]; then
    printf 'summary=%s\n' "$last" >>"$GITHUB_OUTPUT"
fi
if [ "$status" -ne 0 ]; then
    say "not sent (curl exit status $status)"
    exit 1
fi
receivers=$(printf '%s\n' "$last" | sed -n 's/^\[INFO\] done: .*receivers=\([0-9]*\)\/\([0-9]*\).*/\1 \2/p')
if [ -z "$receivers" ]; then
    say "not sent: txpipe's last line is not its done line"
    exit 1
fi
joined=${receivers% *}
total=${receivers#* }
if [ "$total" -ne "$n" ] || [ "$joined" -lt "$quorum" ]; then
    say "sent to $joined of $total receivers; $quorum needed"
    exit 1
fi
say "sent to $joined of $total receivers"
