package operator

// The operator's MedusaRestoreJob reconciler against real sidecars, the test playing
// cass-operator (stop the datacenter, roll the pod template into the StatefulSets, start it), and
// the real medusa-rs restore-init run on every pod with the env the operator put on the
// medusa-restore init container.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	cassdcapi "github.com/k8ssandra/cass-operator/apis/cassandra/v1beta1"
	"github.com/k8ssandra/cass-operator/pkg/reconciliation"
	k8ssapi "github.com/k8ssandra/k8ssandra-operator/apis/k8ssandra/v1alpha1"
	medusaapi "github.com/k8ssandra/k8ssandra-operator/apis/medusa/v1alpha1"
	medusactrl "github.com/k8ssandra/k8ssandra-operator/controllers/medusa"
	"github.com/k8ssandra/k8ssandra-operator/pkg/shared"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (e *env) restoreReconciler() *medusactrl.MedusaRestoreJobReconciler {
	return &medusactrl.MedusaRestoreJobReconciler{ReconcilerConfig: e.cfg, Client: e.c, Scheme: e.scheme, ClientFactory: e.factory}
}

// digest: every live file of every pod's node and the SHA-256 of its content.
func (e *env) digest() map[string]string {
	out := map[string]string{}
	for _, p := range e.pods {
		files, err := p.node.LiveFiles()
		must(e.t, err)
		for rel := range files {
			raw, err := os.ReadFile(filepath.Join(p.node.DataDir, rel))
			must(e.t, err)
			sum := sha256.Sum256(raw)
			out[p.name+"/"+rel] = hex.EncodeToString(sum[:])
		}
	}
	return out
}

// fakeCassOperator does what cass-operator does between the restore reconciler's steps.
type fakeCassOperator struct {
	e                        *env
	stopped, rolled, started bool
	initEnv                  map[string]map[string]string // pod -> env restore-init ran with
	restoreLogs              map[string]string
}

func (f *fakeCassOperator) step() {
	e, t := f.e, f.e.t
	dc := &cassdcapi.CassandraDatacenter{}
	e.get(e.opts.dc, dc)
	now := metav1.Now()
	switch {
	case dc.Spec.Stopped && !f.stopped:
		// scale the StatefulSets to 0: the pods, their sidecars with them, go away
		for _, p := range e.pods {
			e.killSidecar(p, syscall.SIGTERM)
			if p.node.real != nil {
				must(t, p.node.real.stop())
			}
		}
		dc.SetCondition(cassdcapi.DatacenterCondition{Type: cassdcapi.DatacenterStopped, Status: corev1.ConditionTrue, LastTransitionTime: now})
		dc.SetCondition(cassdcapi.DatacenterCondition{Type: cassdcapi.DatacenterReady, Status: corev1.ConditionFalse, LastTransitionTime: now})
		dc.Status.CassandraOperatorProgress = cassdcapi.ProgressReady
		must(t, e.c.Status().Update(e.ctx, dc))
		f.stopped = true
	case f.stopped && !f.rolled && hasEnv(dc, "RESTORE_KEY"):
		// roll the new pod template into every StatefulSet
		for _, r := range dc.GetRacks() {
			sts := &appsv1.StatefulSet{}
			e.get(reconciliation.NewNamespacedNameForStatefulSet(dc, r.Name).Name, sts)
			sts.Spec.Template = *dc.Spec.PodTemplateSpec.DeepCopy()
			must(t, e.c.Update(e.ctx, sts))
		}
		dc.SetCondition(cassdcapi.DatacenterCondition{Type: cassdcapi.DatacenterUpdating, Status: corev1.ConditionFalse, LastTransitionTime: now})
		must(t, e.c.Status().Update(e.ctx, dc))
		f.rolled = true
	case f.rolled && !dc.Spec.Stopped && !f.started:
		// scale up: each pod runs its init containers (medusa-restore), then its containers
		for _, p := range e.pods {
			sts := &appsv1.StatefulSet{}
			e.get(reconciliation.NewNamespacedNameForStatefulSet(dc, p.rack).Name, sts)
			f.runRestoreInit(p, sts)
			if p.node.real != nil {
				must(t, p.node.real.start(f.e.opts.firstIP+slices.Index(e.pods, p)))
			}
		}
		for _, p := range e.pods {
			e.startSidecar(p)
		}
		dc.SetCondition(cassdcapi.DatacenterCondition{Type: cassdcapi.DatacenterStopped, Status: corev1.ConditionFalse, LastTransitionTime: now})
		dc.SetCondition(cassdcapi.DatacenterCondition{Type: cassdcapi.DatacenterReady, Status: corev1.ConditionTrue, LastTransitionTime: now})
		dc.Status.CassandraOperatorProgress = cassdcapi.ProgressReady
		must(t, e.c.Status().Update(e.ctx, dc))
		f.started = true
	}
}

func hasEnv(dc *cassdcapi.CassandraDatacenter, name string) bool {
	for _, c := range dc.Spec.PodTemplateSpec.Spec.InitContainers {
		if c.Name == "medusa-restore" {
			for _, v := range c.Env {
				if v.Name == name && v.Value != "" {
					return true
				}
			}
		}
	}
	return false
}

// runRestoreInit runs `medusa-rs restore-init` for pod p with the env of the StatefulSet's
// medusa-restore init container, resolved as the kubelet resolves it (fieldRef metadata.name,
// secretKeyRef), /var/lib/cassandra being the node's root here.
func (f *fakeCassOperator) runRestoreInit(p *pod, sts *appsv1.StatefulSet) {
	e, t := f.e, f.e.t
	var container *corev1.Container
	for i := range sts.Spec.Template.Spec.InitContainers {
		if sts.Spec.Template.Spec.InitContainers[i].Name == "medusa-restore" {
			container = &sts.Spec.Template.Spec.InitContainers[i]
		}
	}
	if container == nil {
		t.Fatalf("%s: no medusa-restore init container in %s", p.name, sts.Name)
	}
	env := map[string]string{}
	for _, v := range container.Env {
		switch {
		case v.ValueFrom == nil:
			env[v.Name] = strings.ReplaceAll(v.Value, "/var/lib/cassandra", p.node.Root)
		case v.ValueFrom.FieldRef != nil && v.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[v.Name] = p.name
		case v.ValueFrom.SecretKeyRef != nil:
			s := &corev1.Secret{}
			e.get(v.ValueFrom.SecretKeyRef.Name, s)
			env[v.Name] = string(s.Data[v.ValueFrom.SecretKeyRef.Key])
		default:
			t.Fatalf("%s: env %s: unsupported source %+v", p.name, v.Name, v.ValueFrom)
		}
	}
	f.initEnv[p.name] = env
	cmd := exec.Command(e.sidecarBin, "restore-init", "--config", p.ini)
	cmd.Env = append(os.Environ(), "MEDUSA_RS_HOSTS_FILE="+e.hosts, "MEDUSA_RS_STATE_DIR="+filepath.Join(p.dir, "state"), "RUST_LOG=info")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	f.restoreLogs[p.name] = string(out)
	must(t, os.WriteFile(filepath.Join(p.dir, "restore-init.log"), out, 0o644))
	if err != nil {
		t.Fatalf("%s: restore-init failed (%v):\n%s", p.name, err, out)
	}
}

// runRestoreJob creates a MedusaRestoreJob and reconciles it, the test playing cass-operator,
// until it is finished and the secrets are refreshed.
func (e *env) runRestoreJob(name, backup string) (*medusaapi.MedusaRestoreJob, *fakeCassOperator) {
	e.t.Helper()
	e.create(&medusaapi.MedusaRestoreJob{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       medusaapi.MedusaRestoreJobSpec{Backup: backup, CassandraDatacenter: e.opts.dc},
	})
	cass := &fakeCassOperator{e: e, initEnv: map[string]map[string]string{}, restoreLogs: map[string]string{}}
	job := &medusaapi.MedusaRestoreJob{}
	superuser := &corev1.Secret{}
	t0 := time.Now()
	n := e.reconcile(e.restoreReconciler(), key(name), 2*time.Minute, func() bool {
		cass.step()
		e.get(name, job)
		e.get(e.opts.cluster+"-superuser", superuser)
		return !job.Status.FinishTime.IsZero() && superuser.Annotations[k8ssapi.RefreshAnnotation] != ""
	})
	e.t.Logf("MedusaRestoreJob %s finished after %d reconciles in %s", name, n, time.Since(t0).Round(time.Millisecond))
	if !cass.started {
		e.t.Fatal("the restore job finished without the datacenter being restarted")
	}
	return job, cass
}

// A full backup, the nodes changed (new SSTables, one file lost, one corrupted), then a
// MedusaRestoreJob of that backup: the operator computes the in-place host map from GetBackups,
// stops the datacenter, hands BACKUP_NAME, RESTORE_KEY and RESTORE_MAPPING to the medusa-restore
// init container, starts the datacenter; restore-init runs with that env on every pod and puts
// back exactly the backed-up files; the sidecars come back; the operator finishes the job and
// refreshes the secrets.
func TestMedusaRestoreJob(t *testing.T) {
	e := newEnv(t, options{})
	e.checkSucceeded(e.runBackupJob("b1", shared.FullBackup, nil), shared.FullBackup, e.liveFiles())
	before := e.digest()

	for i, p := range e.pods {
		must(t, p.node.Flush())
		files, err := p.node.LiveFiles()
		must(t, err)
		n := 0
		for rel := range files {
			if !strings.HasPrefix(rel, "shop/") || !strings.HasSuffix(rel, "Data.db") {
				continue
			}
			path := filepath.Join(p.node.DataDir, rel)
			if n == 0 && i != 1 {
				must(t, os.Remove(path))
			} else if n == 1 {
				must(t, os.WriteFile(path, []byte("corrupt"), 0o644))
			}
			n++
		}
	}
	if fmt.Sprint(e.digest()) == fmt.Sprint(before) {
		t.Fatal("the nodes did not change")
	}

	job, cass := e.runRestoreJob("restore-b1", "b1")
	st := job.Status
	if len(st.RestoreKey) != 36 || !st.RestorePrepared || st.Message != "" || st.StartTime.IsZero() ||
		st.DatacenterStopped.IsZero() || st.FinishTime.Before(&st.StartTime) {
		t.Fatalf("restore job status %+v", st)
	}
	if st.RestoreMapping.InPlace == nil || !*st.RestoreMapping.InPlace || len(st.RestoreMapping.HostMap) != len(e.pods) {
		t.Fatalf("restore mapping %+v", st.RestoreMapping)
	}
	for _, p := range e.pods {
		if src := st.RestoreMapping.HostMap[p.name]; len(src.Source) != 1 || src.Source[0] != p.name || src.Seed {
			t.Fatalf("mapping of %s: %+v", p.name, src)
		}
	}
	wantMapping, err := json.Marshal(st.RestoreMapping)
	must(t, err)
	for _, p := range e.pods {
		env := cass.initEnv[p.name]
		if env["BACKUP_NAME"] != "b1" || env["RESTORE_KEY"] != st.RestoreKey || env["RESTORE_MAPPING"] != string(wantMapping) ||
			env["POD_NAME"] != p.name || env["MEDUSA_MODE"] != "RESTORE" {
			t.Fatalf("%s: restore-init env %v; want BACKUP_NAME=b1 RESTORE_KEY=%s RESTORE_MAPPING=%s", p.name, env, st.RestoreKey, wantMapping)
		}
		last, err := os.ReadFile(filepath.Join(p.node.Root, ".last-restore"))
		must(t, err)
		if strings.TrimSpace(string(last)) != st.RestoreKey {
			t.Fatalf("%s: .last-restore holds %q", p.name, last)
		}
	}
	after := e.digest()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("after restore %s: %q, backed up %q", k, after[k], v)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("after restore %s exists, not in the backup", k)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	dc := &cassdcapi.CassandraDatacenter{}
	e.get(e.opts.dc, dc)
	if dc.Spec.Stopped {
		t.Fatal("the datacenter was left stopped")
	}
	// The restored datacenter backs up again.
	e.checkSucceeded(e.runBackupJob("b2", shared.FullBackup, nil), shared.FullBackup, e.liveFiles())
}

// A backup of cluster demo restored into a new cluster demo2 (other pod names, other addresses,
// same bucket and prefix, same datacenter name and racks): a sync task makes the MedusaBackup
// there, the operator pairs racks and hosts by name (demo-dc1-r1-sts-0 -> demo2-dc1-r1-sts-0, ...),
// RESTORE_MAPPING is not in place, and every demo2 node ends up with its source node's files and
// tokens.
func TestMedusaRestoreJobOtherCluster(t *testing.T) {
	src := newEnv(t, options{})
	src.checkSucceeded(src.runBackupJob("b1", shared.FullBackup, nil), shared.FullBackup, src.liveFiles())
	before := src.digest()

	dst := newEnv(t, options{cluster: "demo2", base: src.base, firstIP: src.opts.firstIP + len(src.pods)})
	dst.finishTask(dst.createTask("sync-1", medusaapi.OperationTypeSync))
	b := &medusaapi.MedusaBackup{}
	dst.get("b1", b)
	if b.Status.TotalNodes != 3 || b.Status.FinishedNodes != 3 {
		t.Fatalf("synced MedusaBackup %+v", b.Status)
	}
	job, cass := dst.runRestoreJob("restore-b1", "b1")
	m := job.Status.RestoreMapping
	if m.InPlace == nil || *m.InPlace || len(m.HostMap) != 3 {
		t.Fatalf("mapping %+v", m)
	}
	for i, p := range dst.pods {
		source := src.pods[i]
		if got := m.HostMap[p.name].Source; len(got) != 1 || got[0] != source.name {
			t.Fatalf("%s restored from %v, want %s", p.name, got, source.name)
		}
		env := cass.initEnv[p.name]
		wantMapping, _ := json.Marshal(m)
		if env["RESTORE_MAPPING"] != string(wantMapping) || env["BACKUP_NAME"] != "b1" || env["RESTORE_KEY"] != job.Status.RestoreKey {
			t.Fatalf("%s: restore-init env %v", p.name, env)
		}
		yaml, err := os.ReadFile(p.node.Yaml)
		must(t, err)
		for _, tok := range source.node.Tokens {
			if !strings.Contains(string(yaml), tok) {
				t.Fatalf("%s: cassandra.yaml lacks %s's token %s:\n%s", p.name, source.name, tok, yaml)
			}
		}
	}
	after := dst.digest()
	for i, p := range dst.pods {
		prefixSrc, prefixDst := src.pods[i].name+"/", p.name+"/"
		for k, v := range before {
			if !strings.HasPrefix(k, prefixSrc) {
				continue
			}
			rel := strings.TrimPrefix(k, prefixSrc)
			if strings.HasPrefix(rel, "system/local-") || strings.HasPrefix(rel, "system/peers") {
				// node identity: a remote restore deletes these tables (docs/contract.md §6.5)
				if got, ok := after[prefixDst+rel]; ok {
					t.Errorf("%s %s: still there after a remote restore (%s)", p.name, rel, got)
				}
				continue
			}
			if after[prefixDst+rel] != v {
				t.Errorf("%s %s: %q, source %s had %q", p.name, rel, after[prefixDst+rel], src.pods[i].name, v)
			}
		}
	}
}
