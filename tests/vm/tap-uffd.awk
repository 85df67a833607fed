# Turn uffd-unit-tests' "Testing NAME... done|skipped [reason: R]|failed
# [reason: R]" lines into TAP (it predates kselftest output).  Runs in the
# guest: ./uffd-unit-tests 2>&1 | awk -f tap-uffd.awk
function emit(line) { print line; fflush() }
{
	print "# " $0; fflush()
	if (match($0, /Testing .*\.\.\. /)) {
		if (pending != "") { n++; emit("not ok " n " " pending " # no result") }
		pending = substr($0, RSTART + 8, RLENGTH - 8 - 4)
		rest = substr($0, RSTART + RLENGTH)
	} else
		rest = $0
	if (pending == "") next
	if (rest ~ /^done/) { n++; emit("ok " n " " pending); pending = "" }
	else if (rest ~ /^skipped/) {
		r = rest; sub(/^skipped \[reason: /, "", r); sub(/\]$/, "", r)
		n++; emit("ok " n " " pending " # SKIP " r); pending = ""
	} else if (rest ~ /^failed/) { n++; emit("not ok " n " " pending " " rest); pending = "" }
}
END {
	if (pending != "") { n++; emit("not ok " n " " pending " # no result (exited)") }
	emit("1.." n)
}
