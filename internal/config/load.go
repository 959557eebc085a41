package config

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Option adjusts how Load builds a configuration.
type Option func(*loadOptions)

type loadOptions struct {
	overrides map[string]override
	tlsFiles  bool
}

type override struct {
	value  any
	source string
}

// WithOverride sets key (such as "log.level") to value above the file and
// the environment, as a command-line flag does. source names the override
// in problems, as in "--log-level". Unknown keys make Load fail.
func WithOverride(key string, value any, source string) Option {
	return func(o *loadOptions) {
		if o.overrides == nil {
			o.overrides = make(map[string]override)
		}
		o.overrides[key] = override{value: value, source: source}
	}
}

// WithTLSFiles makes Load also read the TLS files the configuration names
// (tls.cert and tls.key): they must parse and belong together, problems
// are reported at their keys, TLS.Identity is filled and node.id_from_key
// takes effect. The daemon loads its configuration this way; tools that
// only need the shell socket do not.
func WithTLSFiles() Option {
	return func(o *loadOptions) { o.tlsFiles = true }
}

// Load reads the YAML file at path (none when path is ""), applies
// defaults, DMSGD_<SECTION>_<KEY> environment overrides and opts, and
// validates the result. A file that cannot be read is a plain error; a
// configuration with problems returns a *ValidationError listing all of
// them, and no Config.
//
// Validation is static: Load never touches the network, and reads the TLS
// files it names only WithTLSFiles.
func Load(path string, opts ...Option) (*Config, error) {
	var o loadOptions
	for _, opt := range opts {
		opt(&o)
	}
	for key := range o.overrides {
		if !isLeaf(key) {
			return nil, fmt.Errorf("config override: unknown key %q", key)
		}
	}

	ps := &problems{file: path, seen: make(map[string]bool)}
	ps.source = func(key string) string { return sourceOf(key, o.overrides) }

	var data []byte
	if path != "" {
		var err error
		data, err = os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		root, perr := parseTree(path, data)
		if perr != nil {
			return nil, &ValidationError{Problems: []Problem{*perr}}
		}
		ps.root = root
		if !ps.checkDuplicates("", root) {
			return nil, &ValidationError{Problems: ps.sorted()}
		}
	}

	v := viper.New()
	v.SetConfigType("yaml")
	if ps.root != nil {
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("read config %s: %w", path, err)
		}
	}
	for _, l := range leaves {
		if err := v.BindEnv(l.key, envName(l.key)); err != nil {
			return nil, fmt.Errorf("bind %s: %w", envName(l.key), err)
		}
	}
	for key, ov := range o.overrides {
		v.Set(key, ov.value)
	}

	cfg := Defaults()
	cfg.File = path
	cfg.explicit = make(map[string]bool)
	for _, l := range leaves {
		if v.Get(l.key) != nil {
			cfg.explicit[l.key] = true
		}
	}
	unmarshal(v, cfg, ps)
	if cfg.Node.ID == [16]byte{} {
		cfg.Node.ID = NodeIDFor(cfg.Node.Label)
	}
	if cfg.Node.ClusterID == [16]byte{} {
		cfg.Node.ClusterID = NodeIDFor(cfg.Node.ClusterLabel)
	}

	validate(cfg, ps)
	ws := &problems{file: ps.file, root: ps.root, source: ps.source, seen: make(map[string]bool), warning: true}
	if len(ps.list) == 0 && o.tlsFiles {
		checkTLSFiles(cfg, ps, ws)
	}
	if len(ps.list) > 0 {
		return nil, &ValidationError{Problems: ps.sorted()}
	}
	warn(cfg, ws)
	cfg.warnings = ws.sorted()
	return cfg, nil
}

// parseTree parses data into its top-level mapping (nil for an empty
// document).
func parseTree(path string, data []byte) (*yaml.Node, *Problem) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		p := syntaxProblem(path, err)
		return nil, &p
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil
	}
	top := resolve(doc.Content[0])
	if isNull(top) {
		return nil, nil
	}
	if top.Kind != yaml.MappingNode {
		return nil, &Problem{File: path, Line: top.Line, Msg: "the configuration must be a mapping of sections (listen:, node:, ...)"}
	}
	return top, nil
}

// isLeaf reports whether key names a leaf of Config.
func isLeaf(key string) bool {
	for _, l := range leaves {
		if l.key == key {
			return true
		}
	}
	return false
}

// sourceOf says where the value of key came from when it was not the file:
// an override's source or "$DMSGD_..."; "" for the file or a default.
// Keys below a leaf (list items) share the leaf's source.
func sourceOf(key string, overrides map[string]override) string {
	base, _, _ := strings.Cut(key, "[")
	if !isLeaf(base) {
		return ""
	}
	if ov, ok := overrides[base]; ok {
		return ov.source
	}
	name := envName(base)
	if val, ok := os.LookupEnv(name); ok && val != "" {
		return "$" + name
	}
	return ""
}
