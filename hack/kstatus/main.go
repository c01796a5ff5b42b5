// kstatus reads Kubernetes objects as JSON on stdin (one object, or a List with items) and prints,
// for each, what Flux's health checks see: the status computed by the real kstatus library
// (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute), as one JSON line
// {"name": ..., "status": "InProgress|Failed|Current|...", "message": ...}.
//
// Built and run by the cluster tests (hack/build-kstatus.sh); not shipped.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	// apimachinery's decoder keeps integers int64, as the accessors kstatus uses expect.
	var doc map[string]interface{}
	if err := utiljson.Unmarshal(raw, &doc); err != nil {
		fail(err)
	}
	objects := []map[string]interface{}{doc}
	if items, ok := doc["items"].([]interface{}); ok {
		objects = objects[:0]
		for _, item := range items {
			obj, ok := item.(map[string]interface{})
			if !ok {
				fail(fmt.Errorf("an item is not an object"))
			}
			objects = append(objects, obj)
		}
	}
	out := json.NewEncoder(os.Stdout)
	for _, obj := range objects {
		u := &unstructured.Unstructured{Object: obj}
		result, err := status.Compute(u)
		if err != nil {
			fail(err)
		}
		if err := out.Encode(verdict{u.GetName(), string(result.Status), result.Message}); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(1)
}
