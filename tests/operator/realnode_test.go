package operator

// A real Apache Cassandra node for the environment, started with scripts/cassandra/node.sh
// (installed by scripts/cassandra/install.sh under $MEDUSA_RS_TOOLS). Its Management API is the
// same shim as a simulated node's (node_test.go), taking snapshots with nodetool; the restore
// test then boots Cassandra on the restored data and reads the rows back.
//
// Opt-in (OPERATOR_TEST_CASSANDRA=1): a node takes ~10 s to start and ~650 MiB, and node.sh
// allows three Cassandra nodes per machine.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

type realNode struct {
	dir, script string
	startArgs   []string
}

func scriptPath(name string) string {
	root, _ := filepath.Abs("../..")
	return filepath.Join(root, "scripts", "cassandra", name)
}

// newRealNode starts node n (127.0.0.n) in dir with one token, and returns it as the
// environment's node (root: dir/data, as node.sh lays it out).
func newRealNode(t *testing.T, dir string, n int, cluster, dc, rack, token string) (*simNode, error) {
	r := &realNode{dir: dir, script: scriptPath("node.sh"),
		startArgs: []string{"--cluster", cluster, "--dc", dc, "--rack", rack, "--initial-token", token, "--heap", "512m"}}
	t.Cleanup(func() { r.run("stop", r.dir, "--kill") })
	if err := r.start(n); err != nil {
		return nil, err
	}
	return &simNode{
		Root: filepath.Join(dir, "data"), DataDir: filepath.Join(dir, "data", "data"),
		Yaml: filepath.Join(dir, "conf", "cassandra.yaml"),
		IP:   fmt.Sprintf("127.0.0.%d", n), DC: dc, Rack: rack, Tokens: []string{token}, real: r,
	}, nil
}

func (r *realNode) run(args ...string) (string, error) {
	cmd := exec.Command("bash", append([]string{r.script}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("node.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (r *realNode) start(n int) error {
	t0 := time.Now()
	_, err := r.run(append([]string{"start", r.dir, fmt.Sprint(n)}, r.startArgs...)...)
	fmt.Fprintf(os.Stderr, "[real cassandra] node %d started in %s\n", n, time.Since(t0).Round(time.Millisecond))
	return err
}

func (r *realNode) stop() error {
	_, err := r.run("stop", r.dir)
	return err
}

func (r *realNode) nodetool(args ...string) (string, error) {
	return r.run(append([]string{"nodetool", r.dir}, args...)...)
}

// cql runs statements (a CQL file's content) with cqlsh against ip.
func cql(ip, stmts string) (string, error) {
	f, err := os.CreateTemp("", "operator-test-*.cql")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(stmts); err != nil {
		return "", err
	}
	f.Close()
	out, err := exec.Command("bash", scriptPath("cqlsh"), ip, "-f", f.Name()).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("cqlsh %s: %v\n%s", ip, err, out)
	}
	return string(out), nil
}

// A one-node datacenter of a real Cassandra 5.0 node: rows written, a backup through the
// operator's MedusaBackupJob, rows deleted and added, then the operator's MedusaRestoreJob;
// restore-init runs with the operator's env while the node is stopped, Cassandra boots on the
// restored data, and the rows are those of the backup.
func TestRealCassandraRestore(t *testing.T) {
	if os.Getenv("OPERATOR_TEST_CASSANDRA") != "1" {
		t.Skip("real Cassandra: set OPERATOR_TEST_CASSANDRA=1 (scripts/cassandra/install.sh first)")
	}
	e := newEnv(t, options{size: 1, racks: []string{"r1"}, real: true})
	ip := e.pods[0].ip
	var inserts strings.Builder
	inserts.WriteString("CREATE KEYSPACE shop WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 1};\n")
	inserts.WriteString("CREATE TABLE shop.orders (id int PRIMARY KEY, item text);\n")
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&inserts, "INSERT INTO shop.orders (id, item) VALUES (%d, 'item-%d');\n", i, i)
	}
	if out, err := cql(ip, inserts.String()); err != nil {
		t.Fatal(out, err)
	}
	e.checkSucceeded(e.runBackupJob("b1", "full", nil), "full", nil)

	if out, err := cql(ip, "DELETE FROM shop.orders WHERE id IN (1, 2, 3);\nINSERT INTO shop.orders (id, item) VALUES (100, 'after');\n"); err != nil {
		t.Fatal(out, err)
	}
	if _, err := e.pods[0].node.real.nodetool("flush"); err != nil {
		t.Fatal(err)
	}

	job, _ := e.runRestoreJob("restore-b1", "b1")
	if job.Status.RestoreMapping.InPlace == nil || !*job.Status.RestoreMapping.InPlace {
		t.Fatalf("mapping %+v", job.Status.RestoreMapping)
	}
	out, err := cql(ip, "SELECT count(*) FROM shop.orders;\nSELECT item FROM shop.orders WHERE id = 2;\nSELECT item FROM shop.orders WHERE id = 100;\n")
	if err != nil {
		t.Fatal(out, err)
	}
	if !regexp.MustCompile(`(?m)^\s+50$`).MatchString(out) || !strings.Contains(out, "item-2") || strings.Contains(out, "after") {
		t.Fatalf("rows after the restore:\n%s", out)
	}
}
