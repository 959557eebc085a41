package config

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// File is the config file, "" when there was none.
	File string
	// Line is the 1-based line in File, 0 when the value did not come
	// from the file (a default, the environment or an override).
	Line int
	// Key is the offending key, such as "span.max_relays" or
	// "media[0].copies[1].path"; "" for a YAML syntax error.
	Key string
	// Msg says what is wrong.
	Msg string
	// Warning marks something valid but risky: it does not make the
	// configuration invalid.
	Warning bool
}

// String formats the problem as "FILE:LINE: key: problem", leaving out the
// parts that are unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteString(":" + strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
	}
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	if p.Warning {
		b.WriteString("warning: ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// ValidationError lists every problem found in a configuration, ordered
// by line (problems without a line last).
type ValidationError struct {
	Problems []Problem
}

// Error returns one problem per line.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// problems collects Problems for one file, locating keys in its YAML tree.
type problems struct {
	file string
	root *yaml.Node // top-level mapping, nil without a file
	// source returns, for a key set outside the file, a description of
	// where it was set ("$DMSGD_LOG_LEVEL"); "" when it came from the file.
	source func(key string) string
	list   []Problem
	seen   map[string]bool
	// warning marks every problem added as a Warning.
	warning bool
}

// add records a problem with key, located in the file when possible.
func (ps *problems) add(key, format string, args ...any) {
	p := Problem{File: ps.file, Key: key, Msg: fmt.Sprintf(format, args...), Warning: ps.warning}
	if src := ps.source(key); src != "" {
		p.Msg += " (set by " + src + ")"
	} else {
		p.Line = lineOf(ps.root, key)
	}
	if s := p.String(); !ps.seen[s] {
		ps.seen[s] = true
		ps.list = append(ps.list, p)
	}
}

// addLine records a problem at a known line.
func (ps *problems) addLine(line int, key, msg string) {
	p := Problem{File: ps.file, Line: line, Key: key, Msg: msg}
	if s := p.String(); !ps.seen[s] {
		ps.seen[s] = true
		ps.list = append(ps.list, p)
	}
}

// sorted returns the problems ordered by line, unlocated ones last.
func (ps *problems) sorted() []Problem {
	out := slices.Clone(ps.list)
	sort.SliceStable(out, func(i, j int) bool {
		li, lj := out[i].Line, out[j].Line
		if li == 0 || lj == 0 {
			return lj == 0 && li != 0
		}
		return li < lj
	})
	return out
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxProblem converts a YAML parse error into a Problem.
func syntaxProblem(file string, err error) Problem {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{File: file, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return Problem{File: file, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// keySegment is one step of a key path: a mapping key or a list index.
type keySegment struct {
	name  string
	index int // -1 for a name
}

// splitKey splits "media[0].copies[1].path" into its segments.
func splitKey(key string) []keySegment {
	var segs []keySegment
	for part := range strings.SplitSeq(key, ".") {
		name, rest, _ := strings.Cut(part, "[")
		if name != "" {
			segs = append(segs, keySegment{name: name, index: -1})
		}
		for rest != "" {
			num, after, _ := strings.Cut(rest, "]")
			i, err := strconv.Atoi(num)
			if err != nil {
				break
			}
			segs = append(segs, keySegment{index: i})
			rest = strings.TrimPrefix(after, "[")
		}
	}
	return segs
}

// lineOf returns the line of key in the YAML tree, or of its nearest
// present ancestor, or 0.
func lineOf(root *yaml.Node, key string) int {
	n, line := root, 0
	for _, seg := range splitKey(key) {
		n = resolve(n)
		if n == nil {
			return line
		}
		var next *yaml.Node
		if seg.index >= 0 {
			if n.Kind == yaml.SequenceNode && seg.index < len(n.Content) {
				next = n.Content[seg.index]
				line = resolve(next).Line
			}
		} else if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == seg.name {
					line = n.Content[i].Line
					next = n.Content[i+1]
					break
				}
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is absent or an explicit YAML null.
func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// checkDuplicates walks the file's YAML tree and reports keys given twice
// in one mapping, each at its line: viper cannot read such a file, and
// would only say so in a YAML error. It returns false when it found one.
func (ps *problems) checkDuplicates(key string, n *yaml.Node) bool {
	n = resolve(n)
	if isNull(n) {
		return true
	}
	ok := true
	switch n.Kind {
	case yaml.MappingNode:
		first := make(map[string]int)
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			if kn.Value == "<<" { // YAML merge key; its values are checked where defined
				continue
			}
			child := joinKey(key, kn.Value)
			if l, dup := first[kn.Value]; dup {
				ps.addLine(kn.Line, child, fmt.Sprintf("duplicate key (first at line %d)", l))
				ok = false
				continue
			}
			first[kn.Value] = kn.Line
			ok = ps.checkDuplicates(child, vn) && ok
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			ok = ps.checkDuplicates(fmt.Sprintf("%s[%d]", key, i), item) && ok
		}
	}
	return ok
}

// unknownKeyMsg says a key is unknown and suggests the closest known one.
func unknownKeyMsg(name string, fields map[string]reflect.StructField) string {
	best, bestDist := "", 3
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if d := editDistance(strings.ToLower(name), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown key (did you mean %q?)", best)
	}
	return "unknown key"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
