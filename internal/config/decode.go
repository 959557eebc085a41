package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/google/uuid"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Configuration values reach Config through one path: viper gathers the
// file, the environment and overrides, and viper.Unmarshal decodes them
// with decodeHook, which turns what viper holds (YAML scalars, environment
// strings) into Config's field types and words every refusal as a
// problem an operator can act on.

var (
	uuidType     = reflect.TypeFor[uuid.UUID]()
	durationType = reflect.TypeFor[time.Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
	peerTypeType = reflect.TypeFor[PeerType]()
)

// leaf is a configuration key that viper resolves as one value: a scalar
// or a whole list. Nested sections are not leaves; their keys are.
type leaf struct {
	key   string // dotted, as in "span.max_relays"
	index []int  // field index path in Config
}

// leaves are Config's keys in declaration order: each is bound to its
// environment variable.
var leaves = collectLeaves(reflect.TypeFor[Config](), "", nil)

func collectLeaves(t reflect.Type, prefix string, index []int) []leaf {
	var out []leaf
	for i := range t.NumField() {
		f := t.Field(i)
		name := tagName(f)
		if name == "" {
			continue
		}
		idx := append(append([]int(nil), index...), i)
		key := joinKey(prefix, name)
		if f.Type.Kind() == reflect.Struct && f.Type != uuidType {
			out = append(out, collectLeaves(f.Type, key, idx)...)
			continue
		}
		out = append(out, leaf{key: key, index: idx})
	}
	return out
}

// tagName returns the config key of a struct field, "" when it is derived.
func tagName(f reflect.StructField) string {
	name := f.Tag.Get("mapstructure")
	if name == "-" || !f.IsExported() {
		return ""
	}
	return name
}

// structFields maps the config keys of a struct type to its fields.
func structFields(t reflect.Type) map[string]reflect.StructField {
	out := make(map[string]reflect.StructField)
	for i := range t.NumField() {
		f := t.Field(i)
		if name := tagName(f); name != "" {
			out[name] = f
		}
	}
	return out
}

func joinKey(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// envName is the environment variable that overrides key.
func envName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// unmarshal decodes what v holds over cfg (which holds the defaults) and
// records every value that does not fit, and every key a section does not
// have, as a problem at its key.
func unmarshal(v *viper.Viper, cfg *Config, ps *problems) {
	err := v.Unmarshal(cfg, func(c *mapstructure.DecoderConfig) {
		c.DecodeHook = decodeHook
		c.WeaklyTypedInput = false
		c.ZeroFields = true
		c.ErrorUnused = true
	})
	addDecodeErrors(ps, err)
}

// invalidKeys starts mapstructure's refusal of the keys a section does
// not have (ErrorUnused), which lists them.
const invalidKeys = "has invalid keys: "

// addDecodeErrors records each refusal in a decoding error at the key
// mapstructure names.
func addDecodeErrors(ps *problems, err error) {
	switch e := err.(type) {
	case nil:
	case *mapstructure.DecodeError:
		inner := e.Unwrap()
		var nested *mapstructure.DecodeError
		if _, joined := inner.(interface{ Unwrap() []error }); joined || errors.As(inner, &nested) {
			addDecodeErrors(ps, inner)
			return
		}
		if keys, ok := strings.CutPrefix(inner.Error(), invalidKeys); ok {
			fields := fieldsAt(e.Name())
			for _, k := range strings.Split(keys, ", ") {
				ps.add(joinKey(e.Name(), k), "%s", unknownKeyMsg(k, fields))
			}
			return
		}
		ps.add(e.Name(), "%v", inner)
	case interface{ Unwrap() []error }:
		for _, inner := range e.Unwrap() {
			addDecodeErrors(ps, inner)
		}
	default:
		if inner := errors.Unwrap(err); inner != nil {
			addDecodeErrors(ps, inner)
			return
		}
		ps.add("", "%v", err)
	}
}

// fieldsAt returns the fields of the section at key ("" for the top).
func fieldsAt(key string) map[string]reflect.StructField {
	t := reflect.TypeFor[Config]()
	for _, seg := range splitKey(key) {
		if seg.index >= 0 {
			if t.Kind() != reflect.Slice {
				return nil
			}
			t = t.Elem()
			continue
		}
		f, ok := structFields(t)[seg.name]
		if !ok {
			return nil
		}
		t = f.Type
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	return structFields(t)
}

// decodeHook converts data, as viper holds it, to the type of a Config
// field, or refuses it with the reason.
func decodeHook(from, to reflect.Type, data any) (any, error) {
	switch to {
	case uuidType:
		return toUUID(data)
	case durationType:
		return toDuration(data)
	case byteSizeType:
		return toByteSize(data)
	case peerTypeType:
		return toPeerType(data)
	}
	switch to.Kind() {
	case reflect.String:
		if !isScalar(data) {
			return nil, fmt.Errorf("must be a single value, not a %s", kindName(data))
		}
		return scalarString(data), nil
	case reflect.Bool:
		return toBool(data)
	case reflect.Int:
		return toIntValue(data)
	case reflect.Slice:
		return toList(to, data)
	case reflect.Struct:
		return toMapping(to, data)
	}
	return data, nil
}

func toUUID(data any) (any, error) {
	s, ok := data.(string)
	if !ok {
		return nil, errors.New("must be a UUID string")
	}
	if s == "" {
		return uuid.Nil, nil
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a UUID", s)
	}
	return u, nil
}

func toDuration(data any) (any, error) {
	if n, ok := toInt(data); ok {
		if n != 0 {
			return nil, fmt.Errorf("must be a duration with a unit, such as %ds", n)
		}
		return time.Duration(0), nil
	}
	s, ok := data.(string)
	if !ok {
		return nil, errors.New("must be a duration such as 10s")
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%q is not a duration such as 10s", s)
	}
	return d, nil
}

func toByteSize(data any) (any, error) {
	if n, ok := toInt(data); ok {
		if n < 0 {
			return nil, errors.New("must not be negative")
		}
		return ByteSize(n), nil
	}
	s, ok := data.(string)
	if !ok {
		return nil, errors.New("must be a size such as 16MiB")
	}
	return ParseByteSize(s)
}

func toPeerType(data any) (any, error) {
	if n, ok := toInt(data); ok {
		if n < 0 || n > MaxPeerType {
			return nil, fmt.Errorf("peer type %d: out of range 0..%d", n, MaxPeerType)
		}
		return PeerType(n), nil
	}
	return ParsePeerType(scalarString(data))
}

func toBool(data any) (any, error) {
	switch v := data.(type) {
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("must be true or false, not %q", v)
		}
		return b, nil
	}
	return nil, errors.New("must be true or false")
}

func toIntValue(data any) (any, error) {
	if n, ok := toInt(data); ok {
		return n, nil
	}
	if s, ok := data.(string); ok {
		if i, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
			return int64(i), nil
		}
	}
	return nil, errors.New("must be an integer")
}

// toList accepts a list, or an environment string: comma-separated for a
// list of strings, YAML (or JSON) for a list of sections.
func toList(to reflect.Type, data any) (any, error) {
	s, ok := data.(string)
	if !ok {
		if data != nil && reflect.ValueOf(data).Kind() != reflect.Slice {
			return nil, errors.New("must be a list")
		}
		return data, nil
	}
	if to.Elem().Kind() == reflect.String {
		items := []any{}
		for part := range strings.SplitSeq(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				items = append(items, part)
			}
		}
		return items, nil
	}
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		return nil, fmt.Errorf("must be a list in YAML form: %v", err)
	}
	if v == nil {
		return []any{}, nil
	}
	if reflect.ValueOf(v).Kind() != reflect.Slice {
		return nil, errors.New("must be a list")
	}
	return v, nil
}

// toMapping accepts a mapping; the keys a section does not have are
// reported from the decoder's metadata.
func toMapping(to reflect.Type, data any) (any, error) {
	if _, ok := toStringMap(data); !ok {
		return nil, errors.New("must be a mapping")
	}
	return data, nil
}

// toInt converts any integer, or a whole float, to int64.
func toInt(raw any) (int64, bool) {
	rv := reflect.ValueOf(raw)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u := rv.Uint()
		return int64(u), u <= math.MaxInt64
	case reflect.Float32, reflect.Float64:
		f := rv.Float()
		return int64(f), f == math.Trunc(f) && math.Abs(f) < 1<<62
	}
	return 0, false
}

func toStringMap(raw any) (map[string]any, bool) {
	switch m := raw.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[fmt.Sprint(k)] = v
		}
		return out, true
	}
	return nil, false
}

func isScalar(raw any) bool {
	switch reflect.ValueOf(raw).Kind() {
	case reflect.Map, reflect.Slice, reflect.Array, reflect.Struct:
		return false
	}
	return true
}

func scalarString(raw any) string {
	if s, ok := raw.(string); ok {
		return s
	}
	return fmt.Sprint(raw)
}

func kindName(raw any) string {
	if reflect.ValueOf(raw).Kind() == reflect.Map {
		return "mapping"
	}
	return "list"
}
