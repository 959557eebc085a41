package config

import (
	"fmt"
	"reflect"
	"strings"
)

// liveKeys are the keys (or, ending in ".", sections) a running daemon
// applies on reload. Every other key needs a restart.
var liveKeys = []string{
	"media",
	"volconf.from",
	"log.level",
	"limits.",
	"span.",
	"keepalive.",
	"shell.tcp",
	"shell.remote",
	"metrics.ready_targets",
	"shell.tcp_privileged",
	"shell.remote_privileged",
	"tls.peers",
}

// IsLive reports whether a change of key can be applied to a running
// daemon without a restart.
func IsLive(key string) bool {
	for _, k := range liveKeys {
		if key == k || strings.HasSuffix(k, ".") && strings.HasPrefix(key, k) {
			return true
		}
	}
	return false
}

// Diff compares the running configuration c with newer, as a SIGHUP
// reload does. changes describes each changed key that can be applied
// live, as "key: old -> new" ("key: changed" for lists); restartNeeded
// names each changed key that needs a restart, such as "listen" or
// "node.label". Both are in the order of the configuration's keys, and
// both are empty when nothing changed.
func (c *Config) Diff(newer *Config) (changes, restartNeeded []string) {
	oldV := reflect.ValueOf(c).Elem()
	newV := reflect.ValueOf(newer).Elem()
	for _, l := range leaves {
		a := oldV.FieldByIndex(l.index)
		b := newV.FieldByIndex(l.index)
		if equivalent(a, b) {
			continue
		}
		if !IsLive(l.key) {
			restartNeeded = append(restartNeeded, l.key)
			continue
		}
		if a.Kind() == reflect.Slice {
			changes = append(changes, fmt.Sprintf("%s: changed (%d -> %d entries)", l.key, a.Len(), b.Len()))
			continue
		}
		changes = append(changes, fmt.Sprintf("%s: %s -> %s", l.key, formatValue(a), formatValue(b)))
	}
	return changes, restartNeeded
}

// equivalent reports whether two values of a key mean the same
// configuration: reflect.DeepEqual, except that an empty list or map
// equals an absent one (nil), at any depth. `media: []` in a file and no
// media key at all are the same configuration, and a reload from one to
// the other changes nothing.
func equivalent(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !equivalent(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		for it := a.MapRange(); it.Next(); {
			bv := b.MapIndex(it.Key())
			if !bv.IsValid() || !equivalent(it.Value(), bv) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := range a.NumField() {
			if !equivalent(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return equivalent(a.Elem(), b.Elem())
	case reflect.Array:
		for i := range a.Len() {
			if !equivalent(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Func:
		return a.IsNil() && b.IsNil()
	}
	return a.Equal(b)
}

// formatValue renders a leaf value for a change description.
func formatValue(v reflect.Value) string {
	if s, ok := v.Interface().(fmt.Stringer); ok {
		return s.String()
	}
	if v.Kind() == reflect.String {
		if v.String() == "" {
			return `""`
		}
		return v.String()
	}
	return fmt.Sprint(v.Interface())
}
