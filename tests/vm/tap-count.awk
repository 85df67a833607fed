# Count the TAP/KTAP results of the guest's results log (see lib.sh).
#   awk -v known=tests/vm/known-skips -f tap-count.awk results.txt
# Prints "FAIL suite: test" for each failure, "KNOWN suite: test (reason)"
# for failures listed in the known-skips file (counted as skipped), and
# finally "COUNTS passed failed skipped".
# Only top-level result lines count (nested KTAP subtests are indented and
# summarised by their parent).  A suite also fails as a whole if it was
# killed by its time limit, exited non-zero without a "not ok" line, bailed
# out, ran fewer tests than its plan, or printed no TAP at all.

function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }

function load_known(   line, n, f) {
	if (known == "") return
	while ((getline line < known) > 0) {
		if (line ~ /^[ \t]*(#|$)/) continue
		n = split(line, f, / :: /)
		if (n < 3) continue
		nk++
		ksuite[nk] = trim(f[1]); kre[nk] = trim(f[2]); kreason[nk] = trim(f[3])
	}
	close(known)
}

function known_reason(suite, test,   i) {
	for (i = 1; i <= nk; i++)
		if (ksuite[i] == suite && test ~ kre[i]) return kreason[i]
	return ""
}

function fail(what) { print "FAIL " what; failed++; s_f++ }

function end_suite(rc,   got) {
	if (suite == "") return
	got = s_results
	if (rc == "")
		; # guest died inside the suite: run.sh reports that
	else if (rc == 137 || rc == 124)
		fail(suite ": killed by its time limit (after " got " results)")
	else if (s_bail != "" && s_notok == 0)
		fail(suite ": bailed out: " s_bail)
	else if (s_plan != "" && got < s_plan && !(rc == 4 && got == 0))
		fail(suite ": planned " s_plan " tests, ran " got " (exit " rc ")")
	else if (rc != 0 && rc != 4 && s_notok == 0)
		fail(suite ": exited with status " rc " without a failed test")
	else if (s_plan == "" && got == 0 && rc != 4)
		fail(suite ": printed no TAP results (exit " rc ")")
	else if (s_plan == "" && got == 0 && rc == 4)
		{ print "SKIP " suite ": skipped as a whole (exit 4)"; skipped++ }
	printf "SUITE %s %d %d %d %s\n", suite, passed - s_p0, s_f, skipped - s_s0, rc
	suite = ""
}

BEGIN { load_known(); passed = failed = skipped = 0 }

/^# cid-suite: / {
	end_suite(""); suite = $3; s_plan = ""; s_results = 0; s_notok = 0; s_bail = ""
	s_p0 = passed; s_s0 = skipped; s_f = 0
	next
}
/^# cid-suite-rc: / { if ($3 == suite) end_suite($4); next }
suite == "" { next }
/^1\.\.[0-9]+/ { s_plan = substr($1, 4) + 0; next }
/^Bail out!/ { s_bail = substr($0, 11); if (s_bail == "") s_bail = "(no reason)"; next }
/^(not )?ok [0-9]+/ {
	num = ($1 == "not") ? $3 : $2
	# A forked child that flushes a copy of the parent's stdio buffer (or
	# goes on running tests) repeats numbers: count each number once.
	if ((suite, num) in seen) { print "NOTE " suite ": test " num " reported again, ignored: " $0; next }
	seen[suite, num] = 1
	s_results++
	line = $0
	notok = (line ~ /^not ok/)
	sub(/^(not )?ok [0-9]+ ?(- )?/, "", line)
	directive = ""
	# "ok 3 name # SKIP why", and kselftest's nameless "ok 3 # SKIP why".
	if (match(line, /(^|[ \t])# *(SKIP|skip|Skip|TODO|todo|XFAIL|xfail)/)) {
		directive = substr(line, RSTART, RLENGTH)
		sub(/^[ \t]*# */, "", directive)
		directive = toupper(substr(directive, 1, 4))
		line = substr(line, 1, RSTART - 1)
	}
	test = trim(line)
	if (directive == "SKIP") { skipped++; next }
	if (directive == "XFAI" || directive == "TODO") { passed++; next }
	if (!notok) { passed++; next }
	s_notok++
	r = known_reason(suite, test)
	if (r != "") { print "KNOWN " suite ": " test " (" r ")"; skipped++; next }
	fail(suite ": " test)
	next
}
END {
	end_suite("")
	print "COUNTS " passed " " failed " " skipped
}
