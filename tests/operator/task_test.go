package operator

// The operator's MedusaTask reconciler against real sidecars: sync (GetBackups on the first pod
// that answers), purge (PurgeBackups on every pod, then a sync task it creates) and
// prepare_restore (PrepareRestore on every pod).

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	medusaapi "github.com/k8ssandra/k8ssandra-operator/apis/medusa/v1alpha1"
	medusactrl "github.com/k8ssandra/k8ssandra-operator/controllers/medusa"
	"github.com/k8ssandra/k8ssandra-operator/pkg/medusa"
	"github.com/k8ssandra/k8ssandra-operator/pkg/shared"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
)

type medusaSummary = medusa.BackupSummary

func reqFor(name string) ctrl.Request { return ctrl.Request{NamespacedName: key(name)} }

func statFile(parts ...string) (os.FileInfo, error) { return os.Stat(filepath.Join(parts...)) }

func (e *env) taskReconciler() *medusactrl.MedusaTaskReconciler {
	return &medusactrl.MedusaTaskReconciler{ReconcilerConfig: e.cfg, Client: e.c, Scheme: e.scheme, ClientFactory: e.factory}
}

// createTask creates a MedusaTask of the environment's datacenter.
func (e *env) createTask(name string, op medusaapi.OperationType) string {
	e.create(&medusaapi.MedusaTask{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       medusaapi.MedusaTaskSpec{Operation: op, CassandraDatacenter: e.opts.dc},
	})
	return name
}

// runTask creates a MedusaTask and reconciles it until its finish time is set.
func (e *env) runTask(name string, op medusaapi.OperationType, backup, restoreKey string) *medusaapi.MedusaTask {
	e.t.Helper()
	e.create(&medusaapi.MedusaTask{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: medusaapi.MedusaTaskSpec{Operation: op, CassandraDatacenter: e.opts.dc, BackupName: backup,
			RestoreKey: restoreKey},
	})
	return e.finishTask(name)
}

func (e *env) finishTask(name string) *medusaapi.MedusaTask {
	e.t.Helper()
	task := &medusaapi.MedusaTask{}
	t0 := time.Now()
	n := e.reconcile(e.taskReconciler(), key(name), 2*time.Minute, func() bool {
		e.get(name, task)
		return !task.Status.FinishTime.IsZero()
	})
	e.t.Logf("MedusaTask %s (%s) finished after %d reconciles in %s", name, task.Spec.Operation, n, time.Since(t0).Round(time.Millisecond))
	return task
}

func (e *env) backupExists(name string) bool {
	return e.c.Get(e.ctx, key(name), &medusaapi.MedusaBackup{}) == nil
}

func TestMedusaTasks(t *testing.T) {
	e := newEnv(t, options{storage: func(s *medusaapi.Storage) { s.MaxBackupCount = 1 }})
	e.checkSucceeded(e.runBackupJob("b1", shared.FullBackup, nil), shared.FullBackup, e.liveFiles())
	for _, p := range e.pods {
		must(t, p.node.Flush())
	}
	live := e.liveFiles()
	e.checkSucceeded(e.runBackupJob("b2", shared.FullBackup, nil), shared.FullBackup, live)
	b1Objects := map[string]int64{}
	for _, p := range e.pods {
		b1Objects[p.name], _ = e.manifestTotals(p.name, "b1")
	}

	t.Run("sync", func(t *testing.T) {
		// b2's MedusaBackup lost (a new Kubernetes cluster on an old bucket), and one the bucket
		// does not have (with its job).
		must(t, e.c.Delete(e.ctx, e.get("b2", &medusaapi.MedusaBackup{})))
		e.create(&medusaapi.MedusaBackup{ObjectMeta: metav1.ObjectMeta{Name: "ghost", Namespace: namespace},
			Spec: medusaapi.MedusaBackupSpec{CassandraDatacenter: e.opts.dc, Type: shared.FullBackup}})
		e.create(newBackupJob("ghost", shared.FullBackup, e.opts.dc))
		task := e.runTask("sync-1", medusaapi.OperationTypeSync, "", "")
		// the first pod that answers
		if len(task.Status.Finished) != 1 || task.Status.Finished[0].PodName != e.pods[0].name || len(task.Status.Failed) != 0 {
			t.Fatalf("sync status %+v", task.Status)
		}
		if e.backupExists("ghost") || e.c.Get(e.ctx, key("ghost"), &medusaapi.MedusaBackupJob{}) == nil {
			t.Fatal("the MedusaBackup (or job) that the bucket lacks was not deleted")
		}
		b := &medusaapi.MedusaBackup{}
		e.get("b2", b)
		st := b.Status
		if st.Status != "SUCCESS" || st.TotalNodes != 3 || st.FinishedNodes != 3 || b.Spec.Type != shared.FullBackup ||
			b.Spec.CassandraDatacenter != e.opts.dc {
			t.Fatalf("synced MedusaBackup b2: %+v %+v", b.Spec, st)
		}
		if st.StartTime.IsZero() || st.FinishTime.Before(&st.StartTime) {
			t.Fatalf("synced MedusaBackup b2 times: start %v finish %v", st.StartTime, st.FinishTime)
		}
		e.checkNodes(b)
		// The operator's sync (createMedusaBackup in medusatask_controller.go) leaves totalFiles and
		// totalSize unset, unlike the backup job's: not something a sidecar can change.
		if st.TotalFiles != 0 || st.TotalSize != "" {
			t.Logf("note: sync now sets totalFiles %d, totalSize %q", st.TotalFiles, st.TotalSize)
		}
		if !e.backupExists("b1") {
			t.Fatal("sync deleted b1")
		}
	})

	t.Run("purge", func(t *testing.T) {
		task := e.runTask("purge-1", medusaapi.OperationTypePurge, "", "")
		if len(task.Status.Failed) != 0 || len(task.Status.Finished) != len(e.pods) {
			t.Fatalf("purge status %+v", task.Status)
		}
		for _, r := range task.Status.Finished {
			// max_backup_count = 1: b1 goes on every node, with at least its manifest's objects
			if r.NbBackupsPurged != 1 || int64(r.NbObjectsPurged) < b1Objects[r.PodName] || r.TotalPurgedSize <= 0 {
				t.Fatalf("purge result of %s: %+v (b1 had %d objects)", r.PodName, r, b1Objects[r.PodName])
			}
		}
		if e.manifestExists(e.pods[0].name, "b1") || !e.manifestExists(e.pods[0].name, "b2") {
			t.Fatal("purge did not keep exactly the newest backup")
		}
		// The purge task created a sync task; it deletes b1's MedusaBackup and job.
		sync := &medusaapi.MedusaTask{}
		e.get("purge-1-sync", sync)
		if sync.Spec.Operation != medusaapi.OperationTypeSync {
			t.Fatalf("purge's follow-up task %+v", sync.Spec)
		}
		e.finishTask("purge-1-sync")
		if e.backupExists("b1") || !e.backupExists("b2") {
			t.Fatalf("after purge + sync: b1 exists %v, b2 exists %v", e.backupExists("b1"), e.backupExists("b2"))
		}
	})

	t.Run("prepare_restore", func(t *testing.T) {
		task := e.runTask("prepare-1", medusaapi.OperationTypePrepareRestore, "b2", "restore-key-1")
		var pods []string
		for _, r := range task.Status.Finished {
			pods = append(pods, r.PodName)
		}
		if len(task.Status.Failed) != 0 || !slices.Equal(slices.Sorted(slices.Values(pods)), e.podNames()) {
			t.Fatalf("prepare_restore status %+v", task.Status)
		}
		for _, p := range e.pods {
			raw, err := os.ReadFile(filepath.Join(p.node.Root, ".restore_mapping", "restore-key-1"))
			must(t, err)
			var m medusaapi.MedusaRestoreMapping
			must(t, json.Unmarshal(raw, &m))
			if m.InPlace == nil || !*m.InPlace || len(m.HostMap) != len(e.pods) || m.HostMap[p.name].Source[0] != p.name {
				t.Fatalf("%s: mapping file %s", p.name, raw)
			}
		}
	})
}

// spec.datacenterName overrides the Cassandra datacenter's name: the CassandraDatacenter object
// is "dc1-object", Cassandra's datacenter "dc1". prepare_restore sends the object's name as
// PrepareRestore's datacenter (which is not a datacenter of the backup), and the restore job
// matches the backup's nodes by the datacenter's name.
func TestDatacenterNameOverride(t *testing.T) {
	e := newEnv(t, options{dc: "dc1-object", dcName: "dc1"})
	if !strings.HasPrefix(e.pods[0].name, "demo-dc1-object-") || e.pods[0].node.DC != "dc1" {
		t.Fatalf("pod %s in DC %s", e.pods[0].name, e.pods[0].node.DC)
	}
	e.checkSucceeded(e.runBackupJob("b1", shared.FullBackup, nil), shared.FullBackup, e.liveFiles())
	task := e.runTask("prepare-1", medusaapi.OperationTypePrepareRestore, "b1", "key-1")
	if len(task.Status.Failed) != 0 || len(task.Status.Finished) != len(e.pods) {
		t.Fatalf("prepare_restore with the object's name: %+v", task.Status)
	}
	for _, p := range e.pods {
		if _, err := os.Stat(filepath.Join(p.node.Root, ".restore_mapping", "key-1")); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
	}
}
