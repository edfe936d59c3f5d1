package operator

// The operator's MedusaBackupJob reconciler against real sidecars: AsyncBackup on every pod,
// BackupStatus polling, then the MedusaBackup it makes from the first GetBackups summary.

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	medusaapi "github.com/k8ssandra/k8ssandra-operator/apis/medusa/v1alpha1"
	medusactrl "github.com/k8ssandra/k8ssandra-operator/controllers/medusa"
	"github.com/k8ssandra/k8ssandra-operator/pkg/shared"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (e *env) backupReconciler() *medusactrl.MedusaBackupJobReconciler {
	return &medusactrl.MedusaBackupJobReconciler{
		ReconcilerConfig: e.cfg, Client: e.c, Scheme: e.scheme, ClientFactory: e.factory,
	}
}

func newBackupJob(name string, typ shared.BackupType, dc string) *medusaapi.MedusaBackupJob {
	return &medusaapi.MedusaBackupJob{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       medusaapi.MedusaBackupJobSpec{CassandraDatacenter: dc, Type: typ},
	}
}

// runBackupJob creates a MedusaBackupJob and reconciles it until its finish time is set, calling
// hook (if any) after every Reconcile. It returns the job.
func (e *env) runBackupJob(name string, typ shared.BackupType, hook func()) *medusaapi.MedusaBackupJob {
	e.t.Helper()
	e.create(newBackupJob(name, typ, e.opts.dc))
	job := &medusaapi.MedusaBackupJob{}
	t0 := time.Now()
	n := e.reconcile(e.backupReconciler(), key(name), 3*time.Minute, func() bool {
		if hook != nil {
			hook()
		}
		e.get(name, job)
		return !job.Status.FinishTime.IsZero()
	})
	e.t.Logf("MedusaBackupJob %s finished after %d reconciles in %s: finished %v, failed %v",
		name, n, time.Since(t0).Round(time.Millisecond), job.Status.Finished, job.Status.Failed)
	return job
}

// humanize re-states the operator's rendering of totalSize (base 1024, two decimals).
func humanize(bytes int64) string {
	units := []string{"B", "KB", "MB", "GB", "TB", "PB"}
	size := float64(bytes)
	i := 0
	for ; size >= 1024 && i < len(units)-1; i++ {
		size /= 1024
	}
	return fmt.Sprintf("%.2f %s", size, units[i])
}

// checkSucceeded asserts what a user sees of a successful MedusaBackupJob and its MedusaBackup.
func (e *env) checkSucceeded(job *medusaapi.MedusaBackupJob, typ shared.BackupType, live map[string]map[string]int64) {
	t := e.t
	t.Helper()
	finished := slices.Sorted(slices.Values(job.Status.Finished))
	if !slices.Equal(finished, e.podNames()) || len(job.Status.Failed) != 0 || len(job.Status.InProgress) != 0 {
		t.Fatalf("job %s: finished %v, failed %v, in progress %v; want finished %v", job.Name,
			job.Status.Finished, job.Status.Failed, job.Status.InProgress, e.podNames())
	}
	if job.Status.StartTime.IsZero() || job.Status.FinishTime.Before(&job.Status.StartTime) {
		t.Fatalf("job %s: start %v, finish %v", job.Name, job.Status.StartTime, job.Status.FinishTime)
	}
	if len(job.OwnerReferences) != 1 || job.OwnerReferences[0].Kind != "CassandraDatacenter" || job.OwnerReferences[0].Name != e.opts.dc {
		t.Fatalf("job %s: owner references %+v", job.Name, job.OwnerReferences)
	}

	b := &medusaapi.MedusaBackup{}
	e.get(job.Name, b)
	if b.Spec.CassandraDatacenter != e.opts.dc || b.Spec.Type != typ {
		t.Fatalf("MedusaBackup %s spec %+v", b.Name, b.Spec)
	}
	var files, size int64
	for _, p := range e.pods {
		n, s := e.manifestTotals(p.name, job.Name)
		files += n
		size += s
		if live == nil {
			continue // a real node: what it had at snapshot time is not known here
		}
		// the manifest holds exactly the live SSTables of the node at snapshot time
		var liveN, liveS int64
		for _, sz := range live[p.name] {
			liveN++
			liveS += sz
		}
		if n != liveN || s != liveS {
			t.Fatalf("%s: manifest of %s has %d objects, %d bytes; the node had %d files, %d bytes", p.name, job.Name, n, s, liveN, liveS)
		}
	}
	st := b.Status
	if st.Status != "SUCCESS" || st.TotalNodes != int32(len(e.pods)) || st.FinishedNodes != int32(len(e.pods)) ||
		st.TotalFiles != files || st.TotalSize != humanize(size) {
		t.Fatalf("MedusaBackup %s status: %s, nodes %d/%d, files %d, size %q; want SUCCESS, %d/%d, %d, %q", b.Name,
			st.Status, st.FinishedNodes, st.TotalNodes, st.TotalFiles, st.TotalSize, len(e.pods), len(e.pods), files, humanize(size))
	}
	if st.StartTime != job.Status.StartTime || st.FinishTime.IsZero() {
		t.Fatalf("MedusaBackup %s times: start %v (job %v), finish %v", b.Name, st.StartTime, job.Status.StartTime, st.FinishTime)
	}
	e.checkNodes(b)
}

// checkNodes: the MedusaBackup's node list is the ring: every pod by name, its DC, rack, tokens.
func (e *env) checkNodes(b *medusaapi.MedusaBackup) {
	t := e.t
	t.Helper()
	if len(b.Status.Nodes) != len(e.pods) {
		t.Fatalf("MedusaBackup %s has %d nodes, want %d: %+v", b.Name, len(b.Status.Nodes), len(e.pods), b.Status.Nodes)
	}
	for _, p := range e.pods {
		i := slices.IndexFunc(b.Status.Nodes, func(n *medusaapi.MedusaBackupNode) bool { return n.Host == p.name })
		if i < 0 {
			t.Fatalf("MedusaBackup %s: no node %s in %s", b.Name, p.name, hostsOf(b.Status.Nodes))
		}
		n := b.Status.Nodes[i]
		var want []int64
		for _, tok := range p.node.Tokens {
			v, _ := strconv.ParseInt(tok, 10, 64)
			want = append(want, v)
		}
		got := slices.Clone(n.Tokens)
		sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
		sort.Slice(want, func(i, j int) bool { return want[i] < want[j] })
		if n.Datacenter != p.node.DC || n.Rack != p.rack || !slices.Equal(got, want) {
			t.Fatalf("MedusaBackup %s node %s: dc %q rack %q tokens %v; want %q %q %v", b.Name, p.name,
				n.Datacenter, n.Rack, got, p.node.DC, p.rack, want)
		}
	}
}

func hostsOf(nodes []*medusaapi.MedusaBackupNode) string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.Host)
	}
	return strings.Join(s, ", ")
}

func (e *env) liveFiles() map[string]map[string]int64 {
	out := map[string]map[string]int64{}
	for _, p := range e.pods {
		files, err := p.node.LiveFiles()
		must(e.t, err)
		out[p.name] = files
	}
	return out
}

// A full and then a differential backup of three pods in two racks.
func TestMedusaBackupJob(t *testing.T) {
	e := newEnv(t, options{})
	live := e.liveFiles()
	job := e.runBackupJob("backup-full", shared.FullBackup, nil)
	e.checkSucceeded(job, shared.FullBackup, live)
	for _, p := range e.pods {
		calls := strings.Join(p.api.Calls(), "\n")
		if !strings.Contains(calls, "POST /api/v0/ops/node/snapshots") ||
			!strings.Contains(calls, "DELETE /api/v0/ops/node/snapshots?snapshotNames=medusa-backup-full") {
			t.Fatalf("%s: Management API calls:\n%s", p.name, calls)
		}
	}

	// New SSTables on every node, then a differential backup.
	for _, p := range e.pods {
		must(t, p.node.Flush())
	}
	live = e.liveFiles()
	job = e.runBackupJob("backup-diff", shared.DifferentialBackup, nil)
	e.checkSucceeded(job, shared.DifferentialBackup, live)

	// A finished job is left alone: one more reconcile changes nothing and does not requeue.
	before := job.Status
	res, err := e.backupReconciler().Reconcile(e.ctx, reqFor("backup-diff"))
	if err != nil || res.RequeueAfter != 0 || res.Requeue {
		t.Fatalf("reconcile of a finished job: %+v, %v", res, err)
	}
	e.get("backup-diff", job)
	if !job.Status.FinishTime.Equal(&before.FinishTime) {
		t.Fatalf("finish time moved: %v -> %v", before.FinishTime, job.Status.FinishTime)
	}

	// The job deleted and created again under the same name: the operator calls AsyncBackup
	// with the name of a complete backup. It must fail on every pod (not "succeed" on the old
	// data), and the stored backup must stay as it was.
	old := &medusaapi.MedusaBackupJob{}
	e.get("backup-full", old)
	must(t, e.c.Delete(e.ctx, old))
	totals := map[string][2]int64{}
	for _, p := range e.pods {
		n, b := e.manifestTotals(p.name, "backup-full")
		totals[p.name] = [2]int64{n, b}
	}
	again := e.runBackupJob("backup-full", shared.DifferentialBackup, nil)
	if len(again.Status.Finished) != 0 || len(again.Status.Failed) != len(e.pods) {
		t.Fatalf("a re-created job on a stored name: finished %v, failed %v", again.Status.Finished, again.Status.Failed)
	}
	for _, p := range e.pods {
		if n, b := e.manifestTotals(p.name, "backup-full"); totals[p.name] != [2]int64{n, b} {
			t.Fatalf("%s: the stored backup changed: %v -> %d objects, %d bytes", p.name, totals[p.name], n, b)
		}
	}
}

// The same with the gRPC client's mTLS (serviceProperties.encryption): the operator reads the
// client secret named by the CassandraDatacenter's annotation; the sidecars require a client
// certificate signed by the CA of the medusa.ini the operator rendered.
func TestMedusaBackupJobMTLS(t *testing.T) {
	e := newEnv(t, options{tls: true})
	if !strings.Contains(e.renderedIni, "tls_cert = /etc/certificates/grpc-server-certs/tls.crt") {
		t.Fatalf("the operator rendered no TLS settings:\n%s", e.renderedIni)
	}
	// A client without a certificate is refused.
	plain, err := e.factory.NewClient(e.addr(e.pods[0]))
	must(t, err)
	if _, err := plain.GetBackups(e.ctx); err == nil {
		t.Fatal("a plaintext client was answered by a TLS sidecar")
	}
	plain.Close()
	live := e.liveFiles()
	job := e.runBackupJob("backup-tls", shared.FullBackup, nil)
	e.checkSucceeded(job, shared.FullBackup, live)
}

// One pod's sidecar is down when the job starts: AsyncBackup to it fails (logged only), every
// BackupStatus round aborts on it, so the job waits, with the others' backups done, as long as
// the sidecar is down. When it comes back it has never heard of the backup: NOT_FOUND, which the
// operator counts as failed. The job finishes failed and makes no MedusaBackup.
func TestMedusaBackupJobSidecarDown(t *testing.T) {
	e := newEnv(t, options{})
	down := e.pods[1]
	e.killSidecar(down, syscall.SIGTERM)
	e.create(newBackupJob("backup-down", shared.FullBackup, e.opts.dc))
	job := &medusaapi.MedusaBackupJob{}
	r := e.backupReconciler()
	// Until the other pods' backups are complete in the bucket and a while more.
	deadline := time.Now().Add(2 * time.Minute)
	var lastErr error
	for calls := 0; ; calls++ {
		_, err := r.Reconcile(e.ctx, reqFor("backup-down"))
		if err != nil {
			lastErr = err
		}
		e.get("backup-down", job)
		if !job.Status.FinishTime.IsZero() {
			t.Fatalf("the job finished while %s's sidecar was down: %+v", down.name, job.Status)
		}
		if calls > 20 && e.manifestExists(e.pods[0].name, "backup-down") && e.manifestExists(e.pods[2].name, "backup-down") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other pods' backups did not complete")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if lastErr == nil || !strings.Contains(lastErr.Error(), "Unavailable") {
		t.Fatalf("reconcile error while a sidecar is down: %v", lastErr)
	}
	if len(job.Status.InProgress) != len(e.pods) || len(job.Status.Finished) != 0 {
		t.Fatalf("while a sidecar is down: in progress %v, finished %v", job.Status.InProgress, job.Status.Finished)
	}

	e.startSidecar(down)
	e.reconcile(r, key("backup-down"), time.Minute, func() bool {
		e.get("backup-down", job)
		return !job.Status.FinishTime.IsZero()
	})
	if !slices.Equal(job.Status.Failed, []string{down.name}) ||
		!slices.Equal(slices.Sorted(slices.Values(job.Status.Finished)), []string{e.pods[0].name, e.pods[2].name}) {
		t.Fatalf("finished %v, failed %v", job.Status.Finished, job.Status.Failed)
	}
	if err := e.c.Get(e.ctx, key("backup-down"), &medusaapi.MedusaBackup{}); err == nil {
		t.Fatal("a MedusaBackup was made for a failed job")
	}
}

// One pod's sidecar is SIGKILLed in the middle of its backup, during the snapshot and during the
// uploads, and restarted at once (the kubelet restarts the container): its BackupStatus then says
// FAILED, never IN_PROGRESS forever; the job finishes with that pod failed and makes no
// MedusaBackup; every pod's GetBackups reports the backup FAILED with two of three nodes
// finished; a sync task makes no MedusaBackup of it.
func TestMedusaBackupJobSidecarKilled(t *testing.T) {
	e := newEnv(t, options{})
	victim := e.pods[1]
	cases := []struct {
		name string
		// arm prepares the victim; ready says when to kill it.
		arm   func()
		ready func(backup string) bool
	}{
		{"during-snapshot",
			func() { victim.api.SetSnapshotDelay(3 * time.Second) },
			func(string) bool {
				return slices.ContainsFunc(victim.api.Calls(), func(c string) bool { return strings.HasPrefix(c, "POST ") })
			}},
		{"during-upload",
			func() {
				victim.api.SetSnapshotDelay(0)
				must(t, victim.node.AddLargeSSTable(192<<20))
			},
			func(backup string) bool {
				return strings.Contains(sinceLastStart(victim.log), "backup started backup="+backup)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			backup := "killed-" + tc.name
			tc.arm()
			killed := false
			job := e.runBackupJob(backup, shared.FullBackup, func() {
				if killed || !tc.ready(backup) {
					return
				}
				time.Sleep(300 * time.Millisecond)
				if e.manifestExists(victim.name, backup) {
					t.Fatal("the victim's backup completed before it could be killed; make it slower")
				}
				e.killSidecar(victim, syscall.SIGKILL)
				killed = true
				e.startSidecar(victim)
			})
			if !killed {
				t.Fatal("the sidecar was never killed")
			}
			if !slices.Equal(job.Status.Failed, []string{victim.name}) || len(job.Status.Finished) != 2 {
				t.Fatalf("finished %v, failed %v", job.Status.Finished, job.Status.Failed)
			}
			if e.backupExists(backup) {
				t.Fatal("a MedusaBackup was made for a failed job")
			}
			for _, p := range e.pods {
				c, err := e.factory.NewClient(e.addr(p))
				must(t, err)
				backups, err := c.GetBackups(e.ctx)
				c.Close()
				must(t, err)
				i := slices.IndexFunc(backups, func(b *medusaSummary) bool { return b.BackupName == backup })
				if i < 0 {
					t.Fatalf("%s: GetBackups has no %s", p.name, backup)
				}
				b := backups[i]
				if b.Status.String() != "FAILED" || b.FinishedNodes != 2 || b.TotalNodes != 3 {
					t.Fatalf("%s: GetBackups says %s, %d/%d nodes", p.name, b.Status, b.FinishedNodes, b.TotalNodes)
				}
			}
			task := e.runTask("sync-"+backup, medusaapi.OperationTypeSync, "", "")
			if len(task.Status.Finished) != 1 {
				t.Fatalf("sync: %+v", task.Status)
			}
			if e.backupExists(backup) {
				t.Fatal("sync made a MedusaBackup of a failed backup")
			}
		})
	}
}

// sinceLastStart is a sidecar log from its latest start on.
func sinceLastStart(path string) string {
	raw, _ := os.ReadFile(path)
	s := string(raw)
	if i := strings.LastIndex(s, "===== start "); i >= 0 {
		s = s[i:]
	}
	return s
}

func (e *env) manifestExists(podName, backup string) bool {
	_, err := statFile(e.base, bucketName, prefix, podName, backup, "meta", "manifest.json")
	return err == nil
}
