package config

import (
	"os"

	"go.yaml.in/yaml/v3"
)

// ResolveShellSocket returns the shell socket a client command (tree,
// shell) connects to: flagValue when set, else $DMSGD_SHELL_SOCKET, else
// shell.socket of the config file at configPath when that file is
// readable and sets it, else DefaultShellSocket. The config file is read
// leniently: a client must still work against a file the daemon would
// reject for unrelated reasons.
func ResolveShellSocket(flagValue, configPath string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv(envName("shell.socket")); env != "" {
		return env
	}
	if configPath != "" {
		if s := shellSocketFromFile(configPath); s != "" {
			return s
		}
	}
	return DefaultShellSocket
}

// shellSocketFromFile returns shell.socket from a config file, "" when the
// file is unreadable or does not set it.
func shellSocketFromFile(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var f struct {
		Shell struct {
			Socket string `yaml:"socket"`
		} `yaml:"shell"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		return ""
	}
	return f.Shell.Socket
}
