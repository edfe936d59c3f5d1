package operator

// The test environment: a controller-runtime fake client holding what the operator's medusa
// controllers read (CassandraDatacenter, its pods and StatefulSets, MedusaConfiguration, secrets),
// the medusa.ini and pod template that the operator's own pkg/medusa code renders, one simulated
// Cassandra node + Management API per pod, and one real medusa-rs sidecar per pod listening on the
// pod's own address (127.0.0.N) and the one gRPC port the operator dials for every pod.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/adutra/goalesce"
	"github.com/go-logr/logr/funcr"
	cassdcapi "github.com/k8ssandra/cass-operator/apis/cassandra/v1beta1"
	"github.com/k8ssandra/cass-operator/pkg/reconciliation"
	k8ssapi "github.com/k8ssandra/k8ssandra-operator/apis/k8ssandra/v1alpha1"
	medusaapi "github.com/k8ssandra/k8ssandra-operator/apis/medusa/v1alpha1"
	"github.com/k8ssandra/k8ssandra-operator/pkg/cassandra"
	"github.com/k8ssandra/k8ssandra-operator/pkg/config"
	"github.com/k8ssandra/k8ssandra-operator/pkg/medusa"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

const (
	namespace  = "k8ssandra"
	bucketName = "medusa-bucket"
	prefix     = "demo"
)

// options of one environment.
type options struct {
	// cluster: the K8ssandraCluster's and cass-operator's cluster name (default demo).
	cluster string
	// base: the [storage] base_path of another environment, to share its bucket (default: a
	// new one).
	base string
	// dc is the CassandraDatacenter object's name; dcName its spec.datacenterName (empty: the
	// object's name is the Cassandra datacenter's name).
	dc, dcName string
	racks      []string
	size       int
	// firstIP: the first pod's address is 127.0.0.<firstIP>.
	firstIP int
	// tls: the operator's gRPC client uses mTLS (serviceProperties.encryption).
	tls bool
	// dataBytes per user SSTable Data.db (default 16 KiB).
	dataBytes int
	// storage overrides of the MedusaConfiguration's storageProperties.
	storage func(*medusaapi.Storage)
	// real: real Cassandra nodes (realnode_test.go) instead of simulated ones.
	real bool
}

func (o *options) defaults() {
	if o.cluster == "" {
		o.cluster = "demo"
	}
	if o.dc == "" {
		o.dc = "dc1"
	}
	if len(o.racks) == 0 {
		o.racks = []string{"r1", "r2"}
	}
	if o.size == 0 {
		o.size = 3
	}
	if o.firstIP == 0 {
		o.firstIP = firstIPFromEnv()
	}
	if o.dataBytes == 0 {
		o.dataBytes = 16 << 10
	}
}

// firstIPFromEnv: OPERATOR_TEST_FIRST_IP (default 41), so that these tests keep off the
// 127.0.0.1-3 that the Rust suites and real Cassandra nodes use.
func firstIPFromEnv() int {
	var n int
	if _, err := fmt.Sscanf(os.Getenv("OPERATOR_TEST_FIRST_IP"), "%d", &n); err == nil && n > 0 && n < 250 {
		return n
	}
	return 41
}

// pod is one Cassandra pod: node, Management API, sidecar process.
type pod struct {
	name, rack, ip string
	dir, ini, log  string
	node           *simNode
	api            *mgmtAPI
	mu             sync.Mutex
	cmd            *exec.Cmd
	exited         chan struct{}
}

type env struct {
	t       *testing.T
	ctx     context.Context
	opts    options
	dir     string
	scheme  *runtime.Scheme
	c       client.Client
	cfg     *config.ReconcilerConfig
	factory medusa.ClientFactory
	kc      *k8ssapi.K8ssandraCluster
	// renderedIni is medusa.CreateMedusaIni's output, before the local paths are put in.
	renderedIni string
	port        int
	base        string // [storage] base_path: the bucket is base/bucketName
	hosts       string
	pods        []*pod
	sidecarBin  string
	opLog       *lockedFile
}

// newEnv builds the fake cluster and starts every sidecar.
func newEnv(t *testing.T, o options) *env {
	t.Helper()
	o.defaults()
	e := &env{t: t, opts: o, dir: t.TempDir(), sidecarBin: sidecarBinary(t)}
	e.opLog = &lockedFile{path: filepath.Join(e.dir, "operator.log")}
	logger := funcr.New(func(prefix, args string) { e.opLog.line(prefix + " " + args) }, funcr.Options{Verbosity: 1})
	ctx, cancel := context.WithCancel(ctrllog.IntoContext(context.Background(), logger))
	e.ctx = ctx
	t.Cleanup(cancel)
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpLogs()
		}
	})
	e.scheme = runtime.NewScheme()
	must(t, clientgoscheme.AddToScheme(e.scheme))
	must(t, cassdcapi.AddToScheme(e.scheme))
	must(t, medusaapi.AddToScheme(e.scheme))
	must(t, k8ssapi.AddToScheme(e.scheme))
	// The operator's envtests use 50 ms; production is 15 s (REQUEUE_DEFAULT_DELAY).
	e.cfg = &config.ReconcilerConfig{DefaultDelay: 100 * time.Millisecond, LongDelay: 300 * time.Millisecond}
	e.base = o.base
	if e.base == "" {
		e.base = filepath.Join(e.dir, "storage")
		must(t, os.MkdirAll(e.base, 0o755))
	}
	e.port = freePort(t, o.firstIP, o.size)

	objs := e.build()
	e.c = fake.NewClientBuilder().WithScheme(e.scheme).WithObjects(objs...).
		WithStatusSubresource(&cassdcapi.CassandraDatacenter{}, &medusaapi.MedusaBackupJob{}, &medusaapi.MedusaBackup{},
			&medusaapi.MedusaTask{}, &medusaapi.MedusaRestoreJob{}, &medusaapi.MedusaBackupSchedule{},
			&medusaapi.MedusaConfiguration{}).
		Build()
	// the operator's real gRPC client factory (main.go: &medusa.DefaultFactory{...})
	e.factory = &medusa.DefaultFactory{}
	for _, p := range e.pods {
		e.startSidecar(p)
	}
	t.Cleanup(e.stopAll)
	return e
}

// build renders everything and returns the objects the fake client starts with.
func (e *env) build() []client.Object {
	t, o := e.t, e.opts
	// MedusaConfiguration + K8ssandraCluster.spec.medusa, merged as the K8ssandraCluster
	// reconciler merges them (mergeStorageProperties: goalesce.DeepMerge, the cluster's
	// properties win).
	mc := &medusaapi.MedusaConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "medusa-config", Namespace: namespace},
		Spec: medusaapi.MedusaConfigurationSpec{StorageProperties: medusaapi.Storage{
			StorageProvider:     "local",
			BucketName:          bucketName,
			CredentialsType:     medusa.CredentialsTypeRoleBased,
			ConcurrentTransfers: 2,
		}},
	}
	if o.storage != nil {
		o.storage(&mc.Spec.StorageProperties)
	}
	e.kc = &k8ssapi.K8ssandraCluster{
		ObjectMeta: metav1.ObjectMeta{Name: o.cluster, Namespace: namespace},
		Spec: k8ssapi.K8ssandraClusterSpec{Medusa: &medusaapi.MedusaClusterTemplate{
			MedusaConfigurationRef: corev1.ObjectReference{Name: mc.Name},
			StorageProperties:      medusaapi.Storage{Prefix: prefix},
			ServiceProperties:      medusaapi.Service{GrpcPort: e.port},
		}},
	}
	var objs []client.Object
	if o.tls {
		ca, server, clientPair := makeCerts(t)
		if !setGRPCEncryption(e.kc, "demo-medusa-client-certs", "demo-medusa-server-certs") {
			t.Skip("this operator release has no gRPC encryption (serviceProperties.encryption)")
		}
		certDir := filepath.Join(e.dir, "grpc-server-certs")
		must(t, os.MkdirAll(certDir, 0o755))
		must(t, os.WriteFile(filepath.Join(certDir, "ca.crt"), ca, 0o644))
		must(t, os.WriteFile(filepath.Join(certDir, "tls.crt"), server[0], 0o644))
		must(t, os.WriteFile(filepath.Join(certDir, "tls.key"), server[1], 0o600))
		objs = append(objs,
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "demo-medusa-client-certs", Namespace: namespace},
				Data: map[string][]byte{"ca.crt": ca, "tls.crt": clientPair[0], "tls.key": clientPair[1]}},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "demo-medusa-server-certs", Namespace: namespace},
				Data: map[string][]byte{"ca.crt": ca, "tls.crt": server[0], "tls.key": server[1]}})
	}
	merged, err := goalesce.DeepMerge(mc.Spec.StorageProperties, e.kc.Spec.Medusa.StorageProperties)
	must(t, err)
	e.kc.Spec.Medusa.StorageProperties = merged

	racks := make([]cassdcapi.Rack, len(o.racks))
	for i, r := range o.racks {
		racks[i] = cassdcapi.Rack{Name: r}
	}
	dcConfig := &cassandra.DatacenterConfig{
		Meta:           k8ssapi.EmbeddedObjectMeta{Name: o.dc, Namespace: namespace},
		Cluster:        o.cluster,
		Size:           int32(o.size),
		Racks:          racks,
		DatacenterName: o.dcName,
		PodTemplateSpec: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "cassandra"}},
		}},
	}
	// The operator's own rendering: medusa.ini, the medusa container (its gRPC port), the
	// medusa-restore init container (its env), the client-secret annotation.
	e.renderedIni = medusa.CreateMedusaIni(e.kc, dcConfig)
	must(t, renderMedusaContainers(dcConfig, e.kc))

	dc := &cassdcapi.CassandraDatacenter{
		ObjectMeta: metav1.ObjectMeta{Name: o.dc, Namespace: namespace, Annotations: dcConfig.Meta.Annotations},
		Spec: cassdcapi.CassandraDatacenterSpec{
			ClusterName:     o.cluster,
			DatacenterName:  o.dcName,
			ServerType:      "cassandra",
			ServerVersion:   "4.1.5",
			Size:            int32(o.size),
			Racks:           racks,
			PodTemplateSpec: dcConfig.PodTemplateSpec.DeepCopy(),
		},
		Status: cassdcapi.CassandraDatacenterStatus{CassandraOperatorProgress: cassdcapi.ProgressReady},
	}
	dc.SetCondition(cassdcapi.DatacenterCondition{Type: cassdcapi.DatacenterReady, Status: corev1.ConditionTrue,
		LastTransitionTime: metav1.Now()})
	objs = append(objs, mc, dc,
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: o.cluster + "-medusa", Namespace: namespace},
			Data: map[string]string{"medusa.ini": e.renderedIni}},
		// the superuser secret, which a finished restore refreshes (medusa.RefreshSecrets)
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: o.cluster + "-superuser", Namespace: namespace},
			Data: map[string][]byte{"username": []byte("demo-superuser"), "password": []byte("secret")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: o.cluster + "-medusa", Namespace: namespace},
			Data: map[string][]byte{"username": []byte("demo-medusa"), "password": []byte("secret")}})

	// Pods and StatefulSets as cass-operator makes them: SplitRacks, <cluster>-<dc>-<rack>-sts-<i>.
	counts := cassdcapi.SplitRacks(o.size, len(racks))
	type placed struct{ name, rack string }
	var all []placed
	for i, r := range racks {
		sts := reconciliation.NewNamespacedNameForStatefulSet(dc, r.Name)
		labels := dc.GetDatacenterLabels()
		labels[cassdcapi.RackLabel] = r.Name
		objs = append(objs, &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: sts.Name, Namespace: namespace, Labels: labels},
			Spec: appsv1.StatefulSetSpec{Replicas: ptr(int32(counts[i])),
				Template: *dc.Spec.PodTemplateSpec.DeepCopy()},
		})
		for j := 0; j < counts[i]; j++ {
			all = append(all, placed{fmt.Sprintf("%s-%d", sts.Name, j), r.Name})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	var hosts bytes.Buffer
	for i, p := range all {
		ip := fmt.Sprintf("127.0.0.%d", o.firstIP+i)
		pd := &pod{name: p.name, rack: p.rack, ip: ip, dir: filepath.Join(e.dir, p.name)}
		var node *simNode
		var err error
		if o.real {
			token := fmt.Sprint(int64(-9e18) + int64(i)*int64(6e18/o.size))
			node, err = newRealNode(t, filepath.Join(pd.dir, "cassandra"), o.firstIP+i, o.cluster, dc.DatacenterName(), p.rack, token)
		} else {
			node, err = newSimNode(filepath.Join(pd.dir, "cassandra"), ip, dc.DatacenterName(), p.rack, int64(1000+i), o.dataBytes)
		}
		must(t, err)
		pd.node = node
		e.pods = append(e.pods, pd)
		fmt.Fprintf(&hosts, "%s\t%s.%s.pod.cluster.local %s.%s-%s-all-pods-service.%s.svc.cluster.local\n",
			ip, strings.ReplaceAll(ip, ".", "-"), namespace, p.name, o.cluster, o.dc, namespace)
		labels := dc.GetDatacenterLabels()
		labels[cassdcapi.RackLabel] = p.rack
		spec := dc.Spec.PodTemplateSpec.Spec.DeepCopy()
		objs = append(objs, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: namespace, Labels: labels},
			Spec:       *spec,
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
		})
	}
	e.hosts = filepath.Join(e.dir, "hosts")
	must(t, os.WriteFile(e.hosts, hosts.Bytes(), 0o644))
	ring := func() []*simNode {
		var nodes []*simNode
		for _, p := range e.pods {
			nodes = append(nodes, p.node)
		}
		return nodes
	}
	for _, p := range e.pods {
		api, err := startMgmtAPI(p.node, ring)
		must(t, err)
		p.api = api
		t.Cleanup(api.Close)
		p.ini = filepath.Join(p.dir, "medusa.ini")
		p.log = filepath.Join(p.dir, "sidecar.log")
		must(t, os.WriteFile(p.ini, []byte(e.localIni(p)), 0o644))
	}
	return objs
}

// localIni is the operator's medusa.ini with what a pod's mounts give it put in local paths:
// the certificates' directory, cassandra.yaml (the operator relies on the default
// /etc/cassandra/cassandra.yaml), base_path of the `local` provider (not in the operator's
// template: the CRD has no local storage), the Management API of this pod (127.0.0.1:8080 in a
// pod, this pod's own address here), and no metrics port (every sidecar would want 9180).
func (e *env) localIni(p *pod) string {
	ini := strings.ReplaceAll(e.renderedIni, "/etc/certificates/grpc-server-certs/", filepath.Join(e.dir, "grpc-server-certs")+"/")
	ini = setIniKey(ini, "cassandra", "config_file", p.node.Yaml)
	ini = setIniKey(ini, "storage", "base_path", e.base)
	ini = setIniKey(ini, "kubernetes", "cassandra_url", p.api.URL)
	ini = setIniKey(ini, "monitoring", "metrics_port", "0")
	return ini
}

// setIniKey sets key in section of an ini in the operator's style (four-space indent), adding
// the key (or the section) when missing.
func setIniKey(ini, section, key, value string) string {
	lines := strings.Split(ini, "\n")
	cur, insertAt := "", -1
	for i, l := range lines {
		s := strings.TrimSpace(l)
		if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
			cur = strings.Trim(s, "[]")
			if cur == section {
				insertAt = i + 1
			}
			continue
		}
		if cur == section {
			if k, _, ok := strings.Cut(s, "="); ok && strings.TrimSpace(k) == key {
				lines[i] = "    " + key + " = " + value
				return strings.Join(lines, "\n")
			}
		}
	}
	if insertAt < 0 {
		return strings.TrimRight(ini, "\n") + "\n\n    [" + section + "]\n    " + key + " = " + value + "\n"
	}
	lines = append(lines[:insertAt], append([]string{"    " + key + " = " + value}, lines[insertAt:]...)...)
	return strings.Join(lines, "\n")
}

// sidecarBinary: MEDUSA_SIDECAR_BIN, else <repo>/target/release/medusa-rs (the multi-call binary;
// run as `medusa-rs sidecar` and `medusa-rs restore-init`).
func sidecarBinary(t *testing.T) string {
	if p := os.Getenv("MEDUSA_SIDECAR_BIN"); p != "" {
		return p
	}
	root, err := filepath.Abs("../..")
	must(t, err)
	p := filepath.Join(root, "target", "release", "medusa-rs")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no sidecar binary at %s (build it with `cargo build --release --bins`, or set MEDUSA_SIDECAR_BIN)", p)
	}
	return p
}

// freePort finds one TCP port free on every pod address (the operator dials podIP:port with the
// same port for every pod).
func freePort(t *testing.T, firstIP, n int) int {
	for attempt := 0; attempt < 50; attempt++ {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", firstIP))
		must(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		var held []net.Listener
		for i := 1; i < n; i++ {
			m, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", firstIP+i, port))
			if err != nil {
				ok = false
				break
			}
			held = append(held, m)
		}
		l.Close()
		for _, m := range held {
			m.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no port free on every pod address")
	return 0
}

func (e *env) addr(p *pod) string { return net.JoinHostPort(p.ip, fmt.Sprint(e.port)) }

// startSidecar runs `medusa-rs sidecar` for pod p as its container would (POD_NAME) and waits
// until it listens on podIP:port.
func (e *env) startSidecar(p *pod) {
	t := e.t
	t.Helper()
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	must(t, err)
	fmt.Fprintf(logf, "===== start %s =====\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(e.sidecarBin, "sidecar", "--config", p.ini, "--listen", e.addr(p))
	cmd.Env = append(os.Environ(),
		"POD_NAME="+p.name,
		"MEDUSA_RS_HOSTS_FILE="+e.hosts,
		"MEDUSA_RS_STATE_DIR="+filepath.Join(p.dir, "state"),
		"MEDUSA_RS_SHUTDOWN_GRACE=5",
		"RUST_LOG=info",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("%s: the sidecar exited before listening:\n%s", p.name, tail(p.log, 40))
		default:
		}
		if c, err := net.DialTimeout("tcp", e.addr(p), 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the sidecar did not listen on %s within 30 s:\n%s", p.name, e.addr(p), tail(p.log, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killSidecar sends sig (SIGKILL: a crash; SIGTERM: a pod stop) and waits for the exit.
func (e *env) killSidecar(p *pod, sig syscall.Signal) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

func (e *env) stopAll() {
	for _, p := range e.pods {
		e.killSidecar(p, syscall.SIGKILL)
	}
}

func (e *env) dumpLogs() {
	for _, p := range e.pods {
		e.t.Logf("===== %s sidecar log (last 30 lines) =====\n%s", p.name, tail(p.log, 30))
	}
	e.t.Logf("===== operator log (last 60 lines) =====\n%s", tail(e.opLog.path, 60))
}

// reconcile drives reconciler r for key the way controller-runtime would, with requeue delays
// capped at 200 ms, until done() holds. A result without requeue and without error ends the
// loop (a controller would wait for a watch event that changes the generation, which nothing
// here makes); so does a terminal error. It returns the number of Reconcile calls.
func (e *env) reconcile(r reconcile.Reconciler, key types.NamespacedName, timeout time.Duration, done func() bool) int {
	e.t.Helper()
	start := time.Now()
	var lastErr error
	for i := 1; ; i++ {
		res, err := r.Reconcile(e.ctx, reconcile.Request{NamespacedName: key})
		if err != nil {
			lastErr = err
		}
		if done() {
			return i
		}
		if time.Since(start) > timeout {
			e.t.Fatalf("%T %s not done after %d reconciles in %s; last error: %v", r, key, i, timeout, lastErr)
		}
		switch {
		case err != nil && errors.Is(err, reconcile.TerminalError(nil)):
			e.t.Fatalf("%T %s: terminal error after %d reconciles: %v", r, key, i, err)
		case err != nil:
			time.Sleep(100 * time.Millisecond)
		case res.RequeueAfter > 0:
			time.Sleep(min(res.RequeueAfter, 200*time.Millisecond))
		case res.Requeue:
			time.Sleep(10 * time.Millisecond)
		default:
			e.t.Fatalf("%T %s: the reconciler stopped requeueing after %d reconciles before the expected state", r, key, i)
		}
	}
}

func (e *env) get(name string, obj client.Object) client.Object {
	e.t.Helper()
	must(e.t, e.c.Get(e.ctx, types.NamespacedName{Namespace: namespace, Name: name}, obj))
	return obj
}

func (e *env) create(obj client.Object) {
	e.t.Helper()
	must(e.t, e.c.Create(e.ctx, obj))
}

func key(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: namespace, Name: name}
}

func (e *env) podNames() []string {
	var out []string
	for _, p := range e.pods {
		out = append(out, p.name)
	}
	return out
}

// manifestTotals reads pod's manifest of backup from the bucket: objects and bytes.
func (e *env) manifestTotals(podName, backup string) (int64, int64) {
	e.t.Helper()
	path := filepath.Join(e.base, bucketName, prefix, podName, backup, "meta", "manifest.json")
	raw, err := os.ReadFile(path)
	must(e.t, err)
	var sections []struct {
		Objects []struct {
			Size int64 `json:"size"`
		} `json:"objects"`
	}
	must(e.t, json.Unmarshal(raw, &sections))
	var n, size int64
	for _, s := range sections {
		for _, o := range s.Objects {
			n++
			size += o.Size
		}
	}
	return n, size
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

func tail(path string, n int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type lockedFile struct {
	mu   sync.Mutex
	path string
}

func (f *lockedFile) line(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fh, err := os.OpenFile(f.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer fh.Close()
	fmt.Fprintf(fh, "%s %s\n", time.Now().Format("15:04:05.000"), s)
}

// makeCerts: a CA, a server pair (usable as client too, as the operator's probe uses it) and a
// client pair, PEM.
func makeCerts(t *testing.T) (ca []byte, server, clientPair [2][]byte) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "medusa-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	must(t, err)
	ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	leaf := func(serial int64, cn string, usages []x509.ExtKeyUsage) [2][]byte {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usages,
			// a name the operator never checks (it verifies the chain only)
			DNSNames: []string{"medusa.k8ssandra.svc"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		must(t, err)
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		must(t, err)
		return [2][]byte{pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}
	}
	server = leaf(2, "medusa-server", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
	clientPair = leaf(3, "k8ssandra-operator", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	return
}
