package operator

// The operator's MedusaBackupSchedule reconciler with a driven clock: it creates MedusaBackupJobs
// (and purge MedusaTasks) when the cron time passes, postpones while one is unfinished
// (concurrencyPolicy Forbid, the default), and the jobs it creates run to the end against the
// sidecars.

import (
	"strings"
	"testing"
	"time"

	medusaapi "github.com/k8ssandra/k8ssandra-operator/apis/medusa/v1alpha1"
	medusactrl "github.com/k8ssandra/k8ssandra-operator/controllers/medusa"
	"github.com/k8ssandra/k8ssandra-operator/pkg/shared"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }

func (e *env) scheduleReconciler(clock *fakeClock) *medusactrl.MedusaBackupScheduleReconciler {
	return &medusactrl.MedusaBackupScheduleReconciler{Client: e.c, Scheme: e.scheme, Clock: clock}
}

func (e *env) listBackupJobs() []medusaapi.MedusaBackupJob {
	l := &medusaapi.MedusaBackupJobList{}
	must(e.t, e.c.List(e.ctx, l, client.InNamespace(namespace)))
	return l.Items
}

func TestMedusaBackupSchedule(t *testing.T) {
	e := newEnv(t, options{})
	created := time.Date(2026, 3, 1, 0, 30, 0, 0, time.UTC)
	clock := &fakeClock{now: created.Add(10 * time.Minute)}
	e.create(&medusaapi.MedusaBackupSchedule{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: namespace, CreationTimestamp: metav1.NewTime(created)},
		Spec: medusaapi.MedusaBackupScheduleSpec{
			CronSchedule: "0 1 * * *",
			BackupSpec:   medusaapi.MedusaBackupJobSpec{CassandraDatacenter: e.opts.dc, Type: shared.FullBackup},
		},
	})
	r := e.scheduleReconciler(clock)
	sched := &medusaapi.MedusaBackupSchedule{}
	step := func(at time.Time) time.Duration {
		t.Helper()
		clock.now = at
		res, err := r.Reconcile(e.ctx, reqFor("nightly"))
		must(t, err)
		e.get("nightly", sched)
		return res.RequeueAfter
	}

	// 00:40: nothing yet; the next run is at 01:00, 20 minutes away.
	if after := step(created.Add(10 * time.Minute)); after != 20*time.Minute || len(e.listBackupJobs()) != 0 {
		t.Fatalf("at 00:40: requeue after %s, jobs %d", after, len(e.listBackupJobs()))
	}
	if want := time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC); !sched.Status.NextSchedule.Time.Equal(want) {
		t.Fatalf("next schedule %v, want %v", sched.Status.NextSchedule, want)
	}

	// 01:00:30: a job named after the time, labelled with the datacenter's labels.
	run1 := time.Date(2026, 3, 1, 1, 0, 30, 0, time.UTC)
	step(run1)
	jobs := e.listBackupJobs()
	if len(jobs) != 1 || jobs[0].Name != "nightly-1772326830" || jobs[0].Spec.CassandraDatacenter != e.opts.dc ||
		jobs[0].Spec.Type != shared.FullBackup || jobs[0].Labels["cassandra.datastax.com/datacenter"] != e.opts.dc {
		t.Fatalf("after 01:00:30: jobs %+v", jobs)
	}
	if !sched.Status.LastExecution.Time.Equal(run1) || !sched.Status.NextSchedule.Time.Equal(time.Date(2026, 3, 2, 1, 0, 0, 0, time.UTC)) {
		t.Fatalf("status after the first run: %+v", sched.Status)
	}

	// The next night the first job has not run yet: Forbid postpones by a minute, no new job.
	if after := step(time.Date(2026, 3, 2, 1, 5, 0, 0, time.UTC)); after != time.Minute || len(e.listBackupJobs()) != 1 {
		t.Fatalf("with a job unfinished: requeue after %s, jobs %d", after, len(e.listBackupJobs()))
	}

	// The scheduled job runs to the end against the sidecars.
	live := e.liveFiles()
	job := &medusaapi.MedusaBackupJob{}
	e.reconcile(e.backupReconciler(), key(jobs[0].Name), 2*time.Minute, func() bool {
		e.get(jobs[0].Name, job)
		return !job.Status.FinishTime.IsZero()
	})
	e.checkSucceeded(job, shared.FullBackup, live)

	// Now the postponed run goes ahead.
	step(time.Date(2026, 3, 2, 1, 6, 0, 0, time.UTC))
	if jobs := e.listBackupJobs(); len(jobs) != 2 {
		t.Fatalf("after the first job finished: %d jobs", len(jobs))
	}

	// A purge schedule makes purge MedusaTasks, which run against the sidecars.
	e.create(&medusaapi.MedusaBackupSchedule{
		ObjectMeta: metav1.ObjectMeta{Name: "purge", Namespace: namespace, CreationTimestamp: metav1.NewTime(created)},
		Spec: medusaapi.MedusaBackupScheduleSpec{
			CronSchedule:  "0 0 * * *",
			OperationType: string(medusaapi.OperationTypePurge),
			BackupSpec:    medusaapi.MedusaBackupJobSpec{CassandraDatacenter: e.opts.dc},
		},
	})
	clock.now = time.Date(2026, 3, 3, 0, 0, 1, 0, time.UTC)
	if _, err := r.Reconcile(e.ctx, reqFor("purge")); err != nil {
		t.Fatal(err)
	}
	tasks := &medusaapi.MedusaTaskList{}
	must(t, e.c.List(e.ctx, tasks, client.InNamespace(namespace)))
	if len(tasks.Items) != 1 || tasks.Items[0].Spec.Operation != medusaapi.OperationTypePurge || !strings.HasPrefix(tasks.Items[0].Name, "purge-") {
		t.Fatalf("purge tasks %+v", tasks.Items)
	}
	task := e.finishTask(tasks.Items[0].Name)
	if len(task.Status.Finished) != len(e.pods) || len(task.Status.Failed) != 0 {
		t.Fatalf("scheduled purge %+v", task.Status)
	}
}
