#!/bin/sh
# The container's start: install every avatar of the mounted avatar store (/avatars, possibly
# empty or read-only) into the rendered repository /models, then run the command (tritonserver:
# every model loaded, or a placed cluster's pod's share of them).
#
# A tritonserver command gets Triton's restricted APIs: model control, shared memory, logging and
# trace answer only callers that send the API key (ops/synctalk_ops/api_key.py; the clients send it with
# SYNCTALK_API_KEY). The key comes from SYNCTALK_API_KEY (compose) or the file SYNCTALK_API_KEY_FILE
# names (Kubernetes: a Secret mounted as a file); without one the server does not start.
set -e
models="${SYNCTALK_MODELS:-/models}"
store="${SYNCTALK_AVATAR_STORE:-/avatars}"
if [ "$1" = "tritonserver" ]; then
    # two flags, one a line; a key is URL-safe base64 (synctalk_ops.api_key refuses any other), so the
    # unquoted expansion below splits at the newline only. Exits 2, saying why, without a key.
    restrictions=$(python3 -m synctalk_ops.api_key --server-args)
    # shellcheck disable=SC2086
    set -- "$@" $restrictions
fi
if [ "${SYNCTALK_INSTALL:-start}" = "start" ]; then  # "sidecar": another container installs them
    synctalk-avatars --repository "$models" sync --store "$store"
fi
if [ "$1" = "tritonserver" ] && [ -n "${SYNCTALK_REPLICA:-}" ]; then
    # A pod of a placed cluster (the StatefulSet: SYNCTALK_REPLICA is its name) loads the shared
    # steps and its share of the avatars instead of every model (ops/synctalk_ops/placement.py); where the
    # store has no placement, nothing is printed and every model is loaded, as the command says.
    # SYNCTALK_ON_DEMAND=1 (deploy/kubernetes-on-demand): the shared steps alone, the activator
    # loading each avatar where it is first asked for.
    share=$(python3 -m synctalk_ops.placement --repository "$models" --store "$store" \
        --share "$SYNCTALK_REPLICA" ${SYNCTALK_ON_DEMAND:+--on-demand})
    if [ -n "$share" ]; then
        for arg do
            shift
            [ "$arg" = "--load-model=*" ] || set -- "$@" "$arg"
        done
        # model names are [a-z0-9_]: the unquoted expansion splits at the newlines only
        # shellcheck disable=SC2086
        set -- "$@" $share
        echo "replica $SYNCTALK_REPLICA loads its share: $(echo "$share" | grep -c .) models"
    fi
fi
exec "$@"
