package operator

import (
	_ "github.com/k8ssandra/k8ssandra-operator/controllers/medusa"
	_ "sigs.k8s.io/controller-runtime/pkg/client/fake"
)
