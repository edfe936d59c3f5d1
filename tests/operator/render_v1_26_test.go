//go:build operator_v1_26

package operator

import (
	"github.com/go-logr/logr"
	k8ssapi "github.com/k8ssandra/k8ssandra-operator/apis/k8ssandra/v1alpha1"
	"github.com/k8ssandra/k8ssandra-operator/pkg/cassandra"
	"github.com/k8ssandra/k8ssandra-operator/pkg/medusa"
)

// renderMedusaContainers as in render_test.go, for operator v1.26 (go.v1.26.mod, build tag
// operator_v1_26), whose container rendering takes no image registry.
func renderMedusaContainers(dcConfig *cassandra.DatacenterConfig, kc *k8ssapi.K8ssandraCluster) error {
	main, err := medusa.CreateMedusaMainContainer(dcConfig, kc.Spec.Medusa, false, kc.SanitizedName(), logr.Discard())
	if err != nil {
		return err
	}
	medusa.UpdateMedusaInitContainer(dcConfig, kc.Spec.Medusa, false, kc.SanitizedName(), logr.Discard())
	medusa.UpdateMedusaMainContainer(dcConfig, main)
	return nil
}

// setGRPCEncryption: v1.26 has no gRPC encryption.
func setGRPCEncryption(*k8ssapi.K8ssandraCluster, string, string) bool { return false }
