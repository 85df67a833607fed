#!/bin/bash
# deploy/kubernetes/ against the Kubernetes API models (python3-kubernetes):
# the DaemonSet, ConfigMap and Namespace are well formed; a manifest with a
# misspelt field and a wrong type is caught, so the check can fail.
. "$(dirname "$0")/lib.sh"
# Debian's python3-kubernetes lives in the system interpreter's path.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
"$PY" -c 'import kubernetes.client, yaml' 2>/dev/null || fail "python3-kubernetes or python3-yaml missing (scripts/deps.d/container-hooks.txt)"
"$PY" "$HERE/k8s_schema.py" "$CID_SOURCE_DIR/deploy/kubernetes/cidd-daemonset.yaml" >"$WORK/out" ||
	{ cat "$WORK/out" >&2; fail "deploy/kubernetes/cidd-daemonset.yaml"; }
expect_grep "documents checked" "^3 documents, 0 problems" "$WORK/out"
ok "cidd-daemonset.yaml: 3 documents match the Kubernetes API models"
sed -e 's/hostPath: {path: \/run\/cid,/hostPth: {path: \/run\/cid,/' \
	-e 's/terminationGracePeriodSeconds: 30/terminationGracePeriodSeconds: "thirty"/' \
	"$CID_SOURCE_DIR/deploy/kubernetes/cidd-daemonset.yaml" >"$WORK/bad.yaml"
rc=0
"$PY" "$HERE/k8s_schema.py" "$WORK/bad.yaml" >"$WORK/bad.out" || rc=$?
expect_eq "bad manifest exit" "$rc" 1
expect_grep "misspelt field" "hostPth: no such field in V1Volume" "$WORK/bad.out"
expect_grep "wrong type" "terminationGracePeriodSeconds: want int" "$WORK/bad.out"
ok "a misspelt field and a wrong type are reported"
echo "$PASSED passed"
