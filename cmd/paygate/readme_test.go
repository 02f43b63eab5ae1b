package main

// The README's transcripts are tested: every ```console block in README.md belongs to a session,
// named by the HTML comment that comes before it,
//
//	<!-- readme-test: session grpcurl -->
//
// and each session runs, in README order, in one bash process against one fresh `paygate dev`
// started in an empty directory (so the README's .paygate/certs/... paths work). In a console
// block a line starting with "$ " is a command, lines ending in "\" continue it, and the lines
// up to the next command are its output (stdout and stderr). A command must exit 0 unless its
// shown output is an error: grpcurl's "ERROR:" or buf curl's {"code": ...}.
//
// Each command's real output must equal the shown output once both are normalised: runs of white
// space become one space, tokens, timestamps and durations become placeholders, and the address
// the test chose becomes 127.0.0.1:8443 again. A shown line "..." stands for any number of lines.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paygate/paygate/internal/cluster"
)

// readmeAPI is the API address the README's commands use; the test rewrites it.
const readmeAPI = "127.0.0.1:8443"

var readmeSessionMarker = regexp.MustCompile(`^<!--\s*readme-test:\s*session\s+(\S+)\s*-->\s*$`)

// readmeCommand is one "$ " command of a console block and the output the README shows.
type readmeCommand struct {
	line   int    // README line of the "$ "
	text   string // the command, continuation lines joined with "\\\n"
	output []string
}

type readmeSession struct {
	name     string
	commands []readmeCommand
}

// parseReadme returns the sessions of the console blocks of a README, in order.
func parseReadme(text string) ([]readmeSession, error) {
	var (
		sessions []readmeSession
		cur      = -1 // index in sessions
		inBlock  bool
		console  bool
		cont     bool // the previous command line ended in a backslash
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if !inBlock {
			if m := readmeSessionMarker.FindStringSubmatch(trimmed); m != nil {
				sessions = append(sessions, readmeSession{name: m[1]})
				cur = len(sessions) - 1
				continue
			}
			if strings.HasPrefix(trimmed, "```") {
				inBlock = true
				console = strings.TrimSpace(strings.TrimPrefix(trimmed, "```")) == "console"
				if console && cur < 0 {
					return nil, fmt.Errorf("line %d: console block outside a session (put <!-- readme-test: session NAME --> before it)", n)
				}
			}
			continue
		}
		if trimmed == "```" {
			if cont {
				return nil, fmt.Errorf("line %d: block ends in a continuation line", n)
			}
			inBlock, console = false, false
			continue
		}
		if !console {
			continue
		}
		s := &sessions[cur]
		switch {
		case cont:
			c := &s.commands[len(s.commands)-1]
			c.text += "\n" + line
			cont = strings.HasSuffix(line, "\\")
		case strings.HasPrefix(line, "$ "):
			s.commands = append(s.commands, readmeCommand{line: n, text: strings.TrimPrefix(line, "$ ")})
			cont = strings.HasSuffix(line, "\\")
		case len(s.commands) == 0:
			return nil, fmt.Errorf("line %d: output before the first command of a console block", n)
		default:
			c := &s.commands[len(s.commands)-1]
			c.output = append(c.output, line)
		}
	}
	if inBlock {
		return nil, fmt.Errorf("unterminated code block")
	}
	for _, s := range sessions {
		if len(s.commands) == 0 {
			return nil, fmt.Errorf("session %s has no commands", s.name)
		}
	}
	return sessions, nil
}

// expectsError reports whether the shown output is an error report, so the command must fail.
func (c readmeCommand) expectsError() bool {
	var lines []string
	for _, l := range c.output {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return false
	}
	if lines[0] == "ERROR:" { // grpcurl
		return true
	}
	return lines[0] == "{" && len(lines) > 1 && strings.HasPrefix(lines[1], `"code":`) // buf curl
}

var readmeVariable = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`pgt_[A-Za-z0-9_-]{20,}`), "pgt_<token>"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "<time>"},
	{regexp.MustCompile(`\b\d+(\.\d+)?(ns|µs|us|ms|s)\b`), "<duration>"},
	{regexp.MustCompile(`"request_id": "[^"]*"`), `"request_id": "<request id>"`},
	// buf curl's error details are base64 protobuf, which holds the request id.
	{regexp.MustCompile(`"value": "[A-Za-z0-9+/=_-]+"`), `"value": "<base64>"`},
	{regexp.MustCompile(`\s+`), " "},
}

// normaliseReadmeLines replaces the variable parts of output lines and drops blank lines.
func normaliseReadmeLines(lines []string) []string {
	var out []string
	for _, l := range lines {
		for _, v := range readmeVariable {
			l = v.re.ReplaceAllString(l, v.with)
		}
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// matchReadmeOutput reports whether got equals want, where a want line "..." matches any number
// of lines.
func matchReadmeOutput(want, got []string) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	if want[0] == "..." {
		for i := 0; i <= len(got); i++ {
			if matchReadmeOutput(want[1:], got[i:]) {
				return true
			}
		}
		return false
	}
	return len(got) > 0 && want[0] == got[0] && matchReadmeOutput(want[1:], got[1:])
}

func TestReadmeParse(t *testing.T) {
	t.Parallel()
	text := "intro\n```console\n$ not in a session\n```\n"
	if _, err := parseReadme(text); err == nil {
		t.Errorf("a console block outside a session was accepted")
	}
	text = "<!-- readme-test: session one -->\n" +
		"```sh\n$ ignored\n```\n" +
		"```console\n$ A=$(echo x \\\n  y)\n$ echo \"$A\"\nx y\n```\n" +
		"<!-- readme-test: session two -->\n" +
		"```console\n$ false\nERROR:\n  Code: NotFound\n```\n"
	got, err := parseReadme(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].name != "one" || got[1].name != "two" {
		t.Fatalf("sessions = %+v", got)
	}
	one := got[0].commands
	if len(one) != 2 || one[0].text != "A=$(echo x \\\n  y)" || len(one[0].output) != 0 || one[1].output[0] != "x y" {
		t.Errorf("session one = %+v", one)
	}
	if one[1].expectsError() || !got[1].commands[0].expectsError() {
		t.Errorf("expectsError wrong: %+v", got)
	}
	norm := normaliseReadmeLines([]string{`  "token": "pgt_SEYFfjHlGaABA_cqVg7a7AVflg_DubVz82JRtV50T04",`, "", `"t": "2026-11-26T13:23:44.744280367Z"  `})
	if strings.Join(norm, "|") != `"token": "pgt_<token>",|"t": "<time>"` {
		t.Errorf("normalised = %q", norm)
	}
	for _, c := range []struct {
		want, got string
		ok        bool
	}{
		{"a|b", "a|b", true},
		{"a|...|d", "a|b|c|d", true},
		{"a|...", "a", true},
		{"a|b", "a|b|c", false},
		{"a|...|d", "a|b|c", false},
	} {
		if matchReadmeOutput(strings.Split(c.want, "|"), strings.Split(c.got, "|")) != c.ok {
			t.Errorf("match(%q, %q) != %v", c.want, c.got, c.ok)
		}
	}
}

func TestReadmeTranscripts(t *testing.T) {
	t.Parallel()
	root, err := cluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	tools := []string{filepath.Join(root, "bin", "grpcurl"), filepath.Join(root, "web", "node_modules", ".bin", "buf")}
	for _, tool := range tools {
		if _, err := os.Stat(tool); err != nil {
			t.Skipf("%s is missing: run scripts/tools.sh (scripts/test.sh does) to test the README's transcripts", tool)
		}
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	sessions, err := parseReadme(string(readme))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	names := map[string]bool{}
	for _, s := range sessions {
		names[s.name] = true
	}
	for _, want := range []string{"grpcurl", "buf-curl"} {
		if !names[want] {
			t.Fatalf("README.md has no %q session; found %v", want, names)
		}
	}

	bin := cluster.Binary(t)
	work := t.TempDir()
	api := cluster.FreePort(t)
	d := startDevProcess(t, bin, work, filepath.Join(work, ".paygate"), nil,
		"dev", "--dir", ".paygate", "--listen", api, "--web", cluster.FreePort(t))

	env := append(os.Environ(),
		"PATH="+filepath.Join(root, "bin")+string(os.PathListSeparator)+filepath.Join(root, "web", "node_modules", ".bin")+
			string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+work, // buf keeps its cache there
	)
	for _, s := range sessions {
		if !runReadmeSession(t, s, work, env, api) {
			break
		}
	}
	d.interrupt()
}

// runReadmeSession runs a session's commands in one bash process and compares each command's
// output with the README's. It returns false when the session could not run to its end.
func runReadmeSession(t *testing.T, s readmeSession, work string, env []string, api string) bool {
	t.Helper()
	outDir, err := os.MkdirTemp(work, "session-")
	if err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	script.WriteString("set -o pipefail\n")
	for i, c := range s.commands {
		cmd := strings.ReplaceAll(c.text, readmeAPI, api)
		fmt.Fprintf(&script, "{\n%s\n} >%q 2>&1 </dev/null\n", cmd, filepath.Join(outDir, fmt.Sprintf("%d.out", i)))
		fmt.Fprintf(&script, "rc=$?\necho $rc >%q\n", filepath.Join(outDir, fmt.Sprintf("%d.rc", i)))
		if c.expectsError() {
			script.WriteString("[ $rc -ne 0 ] || exit 0\n")
		} else {
			script.WriteString("[ $rc -eq 0 ] || exit 0\n")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", script.String())
	cmd.Dir = work
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("session %s: bash: %v\n%s", s.name, err, out)
	}

	for i, c := range s.commands {
		rcText, err := os.ReadFile(filepath.Join(outDir, fmt.Sprintf("%d.rc", i)))
		if err != nil {
			t.Errorf("session %s: README line %d did not run (an earlier command failed)", s.name, c.line)
			return false
		}
		rc, _ := strconv.Atoi(strings.TrimSpace(string(rcText)))
		outText, _ := os.ReadFile(filepath.Join(outDir, fmt.Sprintf("%d.out", i)))
		real := strings.ReplaceAll(string(outText), api, readmeAPI)
		got := normaliseReadmeLines(strings.Split(real, "\n"))
		want := normaliseReadmeLines(c.output)
		if !matchReadmeOutput(want, got) {
			t.Errorf("session %s, README line %d: the output differs from the README's.\ncommand:\n$ %s\nREADME shows:\n%s\nreal output (exit status %d):\n%s",
				s.name, c.line, c.text, strings.Join(c.output, "\n"), rc, real)
		}
		if c.expectsError() != (rc != 0) {
			t.Errorf("session %s, README line %d: exit status %d, but the README shows %s:\n$ %s\n%s",
				s.name, c.line, rc, map[bool]string{true: "an error", false: "success"}[c.expectsError()], c.text, real)
			return false
		}
	}
	return true
}
