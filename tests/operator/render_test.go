//go:build !operator_v1_26

package operator

import (
	"github.com/go-logr/logr"
	cassimages "github.com/k8ssandra/cass-operator/pkg/images"
	k8ssapi "github.com/k8ssandra/k8ssandra-operator/apis/k8ssandra/v1alpha1"
	medusaapi "github.com/k8ssandra/k8ssandra-operator/apis/medusa/v1alpha1"
	"github.com/k8ssandra/k8ssandra-operator/pkg/cassandra"
	"github.com/k8ssandra/k8ssandra-operator/pkg/medusa"
)

// renderMedusaContainers puts the medusa container and the medusa-restore init container into
// dcConfig's pod template with the operator's own code (as its K8ssandraCluster reconciler does,
// reconcileMedusa). Since v1.27 that code takes cass-operator's image registry.
func renderMedusaContainers(dcConfig *cassandra.DatacenterConfig, kc *k8ssapi.K8ssandraCluster) error {
	registry, err := cassimages.NewImageRegistryV2([]byte(imageConfig))
	if err != nil {
		return err
	}
	main, err := medusa.CreateMedusaMainContainer(dcConfig, kc.Spec.Medusa, false, kc.SanitizedName(), logr.Discard(), registry)
	if err != nil {
		return err
	}
	medusa.UpdateMedusaInitContainer(dcConfig, kc.Spec.Medusa, false, kc.SanitizedName(), logr.Discard(), registry)
	medusa.UpdateMedusaMainContainer(dcConfig, main)
	return nil
}

// imageConfig: the image registry the operator's container rendering reads (its test data).
const imageConfig = `apiVersion: config.k8ssandra.io/v1beta2
kind: ImageConfig
metadata:
  name: image-config
images:
  medusa:
    repository: "thelastpickle"
    name: "cassandra-medusa"
    tag: "v0.25.0"
defaults:
  registry: "docker.io"
  pullPolicy: IfNotPresent
`

// setGRPCEncryption sets serviceProperties.encryption (mTLS between the operator and the
// sidecars); false where the release has none.
func setGRPCEncryption(kc *k8ssapi.K8ssandraCluster, clientSecret, serverSecret string) bool {
	kc.Spec.Medusa.ServiceProperties.Encryption = &medusaapi.GRPCEncryption{ClientSecretName: clientSecret, ServerSecretName: serverSecret}
	return true
}
