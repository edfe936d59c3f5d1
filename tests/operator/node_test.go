package operator

// A Cassandra node as the sidecar sees it: a data directory in Cassandra's layout, the
// cassandra.yaml that points at it, and the Management API subset a backup sidecar calls
// (docs/contract.md §3.2, §3.3, §8). Snapshots are taken as Cassandra takes them: hard links of
// the live files plus manifest.json and schema.cql in <table>/snapshots/<tag>/ (§9).
//
// This stands in for the Management API agent that runs inside a k8ssandra Cassandra pod at
// 127.0.0.1:8080: each pod's Management API listens on that pod's own address, and its sidecar's
// cassandra_url names it.

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// components of a BIG-format SSTable, as Cassandra 4.1 writes them.
var components = []string{
	"CompressionInfo.db", "Data.db", "Digest.crc32", "Filter.db", "Index.db", "Statistics.db", "Summary.db", "TOC.txt",
}

// tables of every node: system keyspaces (a few) and user keyspaces. system_traces is
// snapshotted by Cassandra but never backed up by Medusa.
var tables = []struct{ ks, table string }{
	{"system", "local"},
	{"system", "peers_v2"},
	{"system_schema", "keyspaces"},
	{"system_schema", "tables"},
	{"system_auth", "roles"},
	{"system_traces", "sessions"},
	{"shop", "orders"},
	{"shop", "customers"},
	{"metrics", "samples"},
}

// tableID is the table's id as Cassandra names its directory: 32 lower-case hex digits.
func tableID(ks, table string) string {
	sum := md5.Sum([]byte(ks + "." + table))
	return hex.EncodeToString(sum[:])
}

// simNode is one node's disk and identity.
type simNode struct {
	Root, DataDir, Yaml string
	IP, DC, Rack        string
	Tokens              []string
	rng                 *rand.Rand
	gen                 int
	dataBytes           int // bytes of Data.db per SSTable of a user table
	mu                  sync.Mutex
	// real: a real Cassandra node (realnode_test.go) whose snapshots nodetool takes; nil for a
	// simulated one.
	real *realNode
}

// newSimNode lays out a node below root: data (system and user tables, two SSTables each),
// commitlog, saved_caches, hints, conf/cassandra.yaml. dataBytes sizes each user Data.db.
func newSimNode(root, ip, dc, rack string, seed int64, dataBytes int) (*simNode, error) {
	n := &simNode{
		Root: root, DataDir: filepath.Join(root, "data"), Yaml: filepath.Join(root, "conf", "cassandra.yaml"),
		IP: ip, DC: dc, Rack: rack, rng: rand.New(rand.NewSource(seed)), dataBytes: dataBytes,
	}
	for i := 0; i < 4; i++ {
		n.Tokens = append(n.Tokens, strconv.FormatInt(n.rng.Int63()-n.rng.Int63(), 10))
	}
	for _, d := range []string{"data", "commitlog", "saved_caches", "hints", "conf"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	for _, t := range tables {
		if err := os.MkdirAll(n.tableDir(t.ks, t.table), 0o755); err != nil {
			return nil, err
		}
	}
	for i := 0; i < 2; i++ {
		if err := n.Flush(); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "commitlog", "CommitLog-7-1.log"), n.random(4096), 0o644); err != nil {
		return nil, err
	}
	yaml := fmt.Sprintf(`# cassandra.yaml of a simulated Cassandra 4.1 node (medusa-rs operator tests)
cluster_name: 'demo'
num_tokens: %d
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories:
    - %s
commitlog_directory: %s
saved_caches_directory: %s
hints_directory: %s
listen_address: %s
rpc_address: %s
endpoint_snitch: GossipingPropertyFileSnitch
`, len(n.Tokens), n.DataDir, filepath.Join(root, "commitlog"), filepath.Join(root, "saved_caches"),
		filepath.Join(root, "hints"), ip, ip)
	return n, os.WriteFile(n.Yaml, []byte(yaml), 0o644)
}

func (n *simNode) tableDir(ks, table string) string {
	return filepath.Join(n.DataDir, ks, table+"-"+tableID(ks, table))
}

func (n *simNode) random(size int) []byte {
	b := make([]byte, size)
	n.rng.Read(b)
	return b
}

// Flush writes one new SSTable generation into every table (what a memtable flush does), so
// that the next differential backup has new files to upload.
func (n *simNode) Flush() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gen++
	for _, t := range tables {
		size := 512
		if !strings.HasPrefix(t.ks, "system") {
			size = n.dataBytes
		}
		for _, c := range components {
			body := n.random(64 + n.rng.Intn(64))
			if c == "Data.db" {
				body = n.random(size)
			}
			name := fmt.Sprintf("nb-%d-big-%s", n.gen, c)
			if err := os.WriteFile(filepath.Join(n.tableDir(t.ks, t.table), name), body, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// AddLargeSSTable writes one more SSTable into shop.orders whose Data.db has size bytes, so
// that this node's next backup takes a while to upload.
func (n *simNode) AddLargeSSTable(size int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gen++
	dir := n.tableDir("shop", "orders")
	for _, c := range components {
		body := n.random(64)
		if c == "Data.db" {
			body = n.random(size)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("nb-%d-big-%s", n.gen, c)), body, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// LiveFiles is every live SSTable file a backup must hold, keyed by "<ks>/<table dir>/<file>",
// with its size: all keyspaces but system_traces.
func (n *simNode) LiveFiles() (map[string]int64, error) {
	out := map[string]int64{}
	for _, t := range tables {
		if t.ks == "system_traces" {
			continue
		}
		dir := n.tableDir(t.ks, t.table)
		entries, err := os.ReadDir(dir)
		if os.IsNotExist(err) {
			continue // a remote restore deletes system.local and system.peers*
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue
			}
			info, err := e.Info()
			if err != nil {
				return nil, err
			}
			out[t.ks+"/"+filepath.Base(dir)+"/"+e.Name()] = info.Size()
		}
	}
	return out, nil
}

// snapshot takes snapshot tag of every keyspace, as `nodetool snapshot -t tag` does.
func (n *simNode) snapshot(tag string) error {
	if n.real != nil {
		_, err := n.real.nodetool("snapshot", "-t", tag)
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, t := range tables {
		dir := n.tableDir(t.ks, t.table)
		snap := filepath.Join(dir, "snapshots", tag)
		if _, err := os.Stat(snap); err == nil {
			return fmt.Errorf("snapshot %s already exists", tag)
		}
		if err := os.MkdirAll(snap, 0o755); err != nil {
			return err
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		var files []string
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue
			}
			if err := os.Link(filepath.Join(dir, e.Name()), filepath.Join(snap, e.Name())); err != nil {
				return err
			}
			files = append(files, e.Name())
		}
		sort.Strings(files)
		manifest, _ := json.Marshal(map[string]any{"files": files, "created_at": "2026-01-01T00:00:00Z", "expires_at": nil})
		if err := os.WriteFile(filepath.Join(snap, "manifest.json"), manifest, 0o644); err != nil {
			return err
		}
		id := tableID(t.ks, t.table)
		cql := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s (k text PRIMARY KEY, v blob) WITH ID = %s-%s-%s-%s-%s;\n",
			t.ks, t.table, id[:8], id[8:12], id[12:16], id[16:20], id[20:])
		if err := os.WriteFile(filepath.Join(snap, "schema.cql"), []byte(cql), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// clearSnapshot removes snapshot tag from every table.
func (n *simNode) clearSnapshot(tag string) error {
	if n.real != nil {
		_, err := n.real.nodetool("clearsnapshot", "-t", tag)
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, t := range tables {
		if err := os.RemoveAll(filepath.Join(n.tableDir(t.ks, t.table), "snapshots", tag)); err != nil {
			return err
		}
	}
	return nil
}

// mgmtAPI is one node's Management API: the node itself and the ring its gossip knows.
type mgmtAPI struct {
	node  *simNode
	ring  func() []*simNode
	srv   *http.Server
	URL   string // the snapshots URL, as cassandra_url names it
	mu    sync.Mutex
	calls []string
	// snapshotDelay holds every snapshot POST this long before taking it (a slow flush).
	snapshotDelay time.Duration
}

// SetSnapshotDelay makes every later snapshot POST wait d first.
func (a *mgmtAPI) SetSnapshotDelay(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.snapshotDelay = d
}

// startMgmtAPI listens on node.IP (any free port) and serves the calls of docs/contract.md §8.
func startMgmtAPI(node *simNode, ring func() []*simNode) (*mgmtAPI, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(node.IP, "0"))
	if err != nil {
		return nil, err
	}
	a := &mgmtAPI{node: node, ring: ring}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v0/ops/node/snapshots", a.snapshots)
	mux.HandleFunc("/api/v0/metadata/endpoints", a.endpoints)
	mux.HandleFunc("/api/v0/metadata/versions/release", func(w http.ResponseWriter, r *http.Request) {
		a.record(r)
		io.WriteString(w, "4.1.5")
	})
	mux.HandleFunc("/api/v0/ops/keyspace/replication", func(w http.ResponseWriter, r *http.Request) {
		a.record(r)
		ks := r.URL.Query().Get("keyspaceName")
		repl := map[string]string{"class": "org.apache.cassandra.locator.NetworkTopologyStrategy", node.DC: "3"}
		if strings.HasPrefix(ks, "system") {
			repl = map[string]string{"class": "org.apache.cassandra.locator.LocalStrategy"}
		}
		json.NewEncoder(w).Encode(repl)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.record(r)
		http.Error(w, "not simulated", http.StatusNotFound)
	})
	a.srv = &http.Server{Handler: mux}
	a.URL = "http://" + ln.Addr().String() + "/api/v0/ops/node/snapshots"
	go a.srv.Serve(ln)
	return a, nil
}

func (a *mgmtAPI) record(r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, r.Method+" "+r.URL.RequestURI())
}

// Calls is every request so far, "METHOD /path?query".
func (a *mgmtAPI) Calls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

func (a *mgmtAPI) snapshots(w http.ResponseWriter, r *http.Request) {
	a.record(r)
	switch r.Method {
	case http.MethodPost:
		var body struct {
			Name string `json:"snapshot_name"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Name == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		a.mu.Lock()
		delay := a.snapshotDelay
		a.mu.Unlock()
		time.Sleep(delay)
		if err := a.node.snapshot(body.Name); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "OK")
	case http.MethodDelete:
		for _, tag := range strings.Split(r.URL.Query().Get("snapshotNames"), ",") {
			if tag == "" {
				continue
			}
			if err := a.node.clearSnapshot(tag); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		io.WriteString(w, "OK")
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (a *mgmtAPI) endpoints(w http.ResponseWriter, r *http.Request) {
	a.record(r)
	var entity []map[string]string
	for _, n := range a.ring() {
		entity = append(entity, map[string]string{
			"ENDPOINT_IP":     n.IP,
			"DC":              n.DC,
			"RACK":            n.Rack,
			"TOKENS":          strings.Join(n.Tokens, ","),
			"IS_ALIVE":        "true",
			"IS_LOCAL":        strconv.FormatBool(n == a.node),
			"RELEASE_VERSION": "4.1.5",
			"PARTITIONER":     "org.apache.cassandra.dht.Murmur3Partitioner",
			"STATUS":          "NORMAL",
		})
	}
	json.NewEncoder(w).Encode(map[string]any{"entity": entity, "status": 200})
}

// Close stops the server and waits for requests in flight (a delayed snapshot still writing).
func (a *mgmtAPI) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a.srv.Shutdown(ctx)
}
