#!/bin/sh
# The container's start: install every avatar of the mounted avatar store (/avatars, possibly
# empty or read-only) into the rendered repository /models, then run the command (tritonserver).
set -e
synctalk-avatars --repository /models sync --store /avatars
exec "$@"
