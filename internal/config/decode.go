package config

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.yaml.in/yaml/v3"
)

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

// leaves are Config's keys in declaration order.
var leaves = collectLeaves(reflect.TypeFor[Config](), "", nil)

func collectLeaves(t reflect.Type, prefix string, index []int) []leaf {
	var out []leaf
	for i := range t.NumField() {
		f := t.Field(i)
		name := tagName(f)
		if name == "" {
			continue
		}
		idx := append(cloneIndex(index), i)
		key := joinKey(prefix, name)
		if f.Type.Kind() == reflect.Struct && f.Type != uuidType {
			out = append(out, collectLeaves(f.Type, key, idx)...)
			continue
		}
		out = append(out, leaf{key: key, index: idx})
	}
	return out
}

// cloneIndex copies an index path so appends never share a backing array.
func cloneIndex(index []int) []int { return append([]int(nil), index...) }

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

// decoder converts raw values (from YAML through viper, or environment
// strings) into typed fields, reporting what does not fit.
type decoder struct {
	ps *problems
}

// decode stores raw into dst, reporting a problem at key when it does not
// convert. dst keeps its value on failure.
func (d *decoder) decode(key string, raw any, dst reflect.Value) {
	if raw == nil {
		return
	}
	if rv := reflect.ValueOf(raw); rv.Type() == dst.Type() {
		dst.Set(rv)
		return
	}
	switch dst.Type() {
	case uuidType:
		s, ok := raw.(string)
		if !ok {
			d.ps.add(key, "must be a UUID string")
			return
		}
		if s == "" {
			dst.Set(reflect.ValueOf(uuid.Nil))
			return
		}
		u, err := uuid.Parse(s)
		if err != nil {
			d.ps.add(key, "%q is not a UUID", s)
			return
		}
		dst.Set(reflect.ValueOf(u))
		return
	case durationType:
		d.decodeDuration(key, raw, dst)
		return
	case byteSizeType:
		if n, ok := toInt(raw); ok {
			if n < 0 {
				d.ps.add(key, "must not be negative")
				return
			}
			dst.SetInt(n)
			return
		}
		s, ok := raw.(string)
		if !ok {
			d.ps.add(key, "must be a size such as 16MiB")
			return
		}
		b, err := ParseByteSize(s)
		if err != nil {
			d.ps.add(key, "%v", err)
			return
		}
		dst.SetInt(int64(b))
		return
	case peerTypeType:
		if n, ok := toInt(raw); ok {
			if n < 0 || n > MaxPeerType {
				d.ps.add(key, "peer type %d: out of range 0..%d", n, MaxPeerType)
				return
			}
			dst.SetUint(uint64(n))
			return
		}
		t, err := ParsePeerType(scalarString(raw))
		if err != nil {
			d.ps.add(key, "%v", err)
			return
		}
		dst.SetUint(uint64(t))
		return
	}

	switch dst.Kind() {
	case reflect.String:
		if !isScalar(raw) {
			d.ps.add(key, "must be a single value, not a %s", kindName(raw))
			return
		}
		dst.SetString(scalarString(raw))
	case reflect.Bool:
		switch v := raw.(type) {
		case bool:
			dst.SetBool(v)
		case string:
			b, err := strconv.ParseBool(v)
			if err != nil {
				d.ps.add(key, "must be true or false, not %q", v)
				return
			}
			dst.SetBool(b)
		default:
			d.ps.add(key, "must be true or false")
		}
	case reflect.Int:
		n, ok := toInt(raw)
		if !ok {
			if s, isStr := raw.(string); isStr {
				i, err := strconv.Atoi(strings.TrimSpace(s))
				n, ok = int64(i), err == nil
			}
		}
		if !ok {
			d.ps.add(key, "must be an integer")
			return
		}
		dst.SetInt(n)
	case reflect.Slice:
		d.decodeSlice(key, raw, dst)
	case reflect.Struct:
		d.decodeStruct(key, raw, dst)
	default:
		panic(fmt.Sprintf("config: no decoder for %s (%s)", dst.Type(), key))
	}
}

func (d *decoder) decodeDuration(key string, raw any, dst reflect.Value) {
	if n, ok := toInt(raw); ok {
		if n != 0 {
			d.ps.add(key, "must be a duration with a unit, such as %ds", n)
			return
		}
		dst.SetInt(0)
		return
	}
	s, ok := raw.(string)
	if !ok {
		d.ps.add(key, "must be a duration such as 10s")
		return
	}
	dur, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		d.ps.add(key, "%q is not a duration such as 10s", s)
		return
	}
	dst.SetInt(int64(dur))
}

func (d *decoder) decodeSlice(key string, raw any, dst reflect.Value) {
	if s, ok := raw.(string); ok {
		if dst.Type().Elem().Kind() == reflect.String {
			// An environment value: a comma-separated list.
			var items []any
			for part := range strings.SplitSeq(s, ",") {
				if part = strings.TrimSpace(part); part != "" {
					items = append(items, part)
				}
			}
			raw = items
		} else {
			// An environment value: the list in YAML (or JSON) form.
			var v any
			if err := yaml.Unmarshal([]byte(s), &v); err != nil {
				d.ps.add(key, "must be a list in YAML form: %v", err)
				return
			}
			if v == nil {
				v = []any{}
			}
			raw = v
		}
	}
	rv := reflect.ValueOf(raw)
	if rv.Kind() != reflect.Slice {
		d.ps.add(key, "must be a list")
		return
	}
	out := reflect.MakeSlice(dst.Type(), rv.Len(), rv.Len())
	for i := range rv.Len() {
		d.decode(fmt.Sprintf("%s[%d]", key, i), rv.Index(i).Interface(), out.Index(i))
	}
	dst.Set(out)
}

func (d *decoder) decodeStruct(key string, raw any, dst reflect.Value) {
	m, ok := toStringMap(raw)
	if !ok {
		d.ps.add(key, "must be a mapping")
		return
	}
	fields := structFields(dst.Type())
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		f, known := fields[k]
		if !known {
			d.ps.add(joinKey(key, k), "%s", unknownKeyMsg(k, fields))
			continue
		}
		d.decode(joinKey(key, k), m[k], dst.FieldByIndex(f.Index))
	}
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
