package client

import (
	"slices"
	"strings"
	"testing"
)

func TestMastersAreTriedInTheirOrderEachWithItsProtocol(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []master
	}{
		{"one PB master", Config{Master: "a:9989"}, []master{{PB, "a:9989"}}},
		{"mixed, spaces around commas", Config{Master: "a:9989, ws://b:9990/x ,wss://c/"},
			[]master{{PB, "a:9989"}, {Msgpack, "ws://b:9990/x"}, {Msgpack, "wss://c/"}}},
		{"msgpack for every host:port", Config{Master: "a:1,b:2", Protocol: Msgpack},
			[]master{{Msgpack, "ws://a:1/"}, {Msgpack, "ws://b:2/"}}},
		{"msgpack with TLS", Config{Master: "a:1,ws://b:2/", Protocol: Msgpack, TLS: true},
			[]master{{Msgpack, "wss://a:1/"}, {Msgpack, "ws://b:2/"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.masters()
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("masters() = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestNewRefusesABadMasterNamingIt(t *testing.T) {
	for _, tc := range []struct {
		master, protocol string
		want             string
	}{
		{"a:1,,b:2", "", `Config.Master "a:1,,b:2": master 2 is empty`},
		{"a:1,", "", "master 2 is empty"},
		{"a:1,ws://b/", PB, `Config.Master "ws://b/": PB wants host:port`},
		{"a:1,nohost", "", `Config.Master "nohost": want host:port or a ws:// URL`},
	} {
		_, err := New(Config{Master: tc.master, Protocol: tc.protocol, Name: "bot", Password: "pw", Basedir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New with Master %q, Protocol %q: %v, want %q", tc.master, tc.protocol, err, tc.want)
		}
	}
}
