// A Go client of a rack, built only from the Go code protoc generates from proto/fusionrack/v1
// (tests/integration/test_go_client.py generates it with Debian's protoc-gen-go and
// protoc-gen-go-grpc and runs this program against a real rack and controller).
//
// It does what an orchestration tool written in Go does first: asks the controller for the
// domain and its compute trays, reads a tray's inventory from its agent, stores bytes from an
// accelerator of the first compute tray into one of the last compute tray and loads them back,
// and sends one bad request. Each answer is printed on its own line as a JSON object:
//
//	{"call": "Controller.GetDomain", "response": <the response in proto3 JSON>}
//	{"call": "Memory.Load", "code": "InvalidArgument", "message": "..."}
//
// Usage: goclient CONTROLLER_ADDRESS (host:port, plaintext).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	fusionrackv1 "github.com/fusionrack/fusionrack/gen/go/fusionrack/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// The fabric address of byte `offset` of accelerator `index` (common.proto, "Fabric addresses").
func unicast(index uint32, offset uint64) uint64 {
	return uint64(index)<<48 | offset
}

// One line of output: the call and its response, or its status code and message.
type line struct {
	Call     string          `json:"call"`
	Response json.RawMessage `json:"response,omitempty"`
	Code     string          `json:"code,omitempty"`
	Message  string          `json:"message,omitempty"`
}

func emit(call string, response proto.Message, err error) {
	out := line{Call: call}
	if err != nil {
		st := status.Convert(err)
		out.Code, out.Message = st.Code().String(), st.Message()
	} else {
		body, marshalErr := protojson.Marshal(response)
		if marshalErr != nil {
			fail("%s: %v", call, marshalErr)
		}
		out.Response = body
	}
	text, _ := json.Marshal(out)
	fmt.Println(string(text))
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "goclient: "+format+"\n", args...)
	os.Exit(1)
}

func dial(ctx context.Context, address string) *grpc.ClientConn {
	// WithInsecure: Debian 12's grpc-go (1.33) predates credentials/insecure.
	conn, err := grpc.DialContext(ctx, address, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fail("cannot reach %s: %v", address, err)
	}
	return conn
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: goclient CONTROLLER_ADDRESS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	conn := dial(ctx, os.Args[1])
	defer conn.Close()
	controller := fusionrackv1.NewControllerClient(conn)

	domain, err := controller.GetDomain(ctx, &fusionrackv1.GetDomainRequest{})
	emit("Controller.GetDomain", domain, err)
	listed, err := controller.ListTrays(ctx, &fusionrackv1.ListTraysRequest{
		Kind: fusionrackv1.TrayKind_TRAY_KIND_COMPUTE,
	})
	emit("Controller.ListTrays", listed, err)
	if err != nil || len(listed.Trays) < 2 {
		fail("the controller listed no two compute trays: %v", err)
	}
	first, last := listed.Trays[0], listed.Trays[len(listed.Trays)-1]

	agent := dial(ctx, first.Address)
	defer agent.Close()
	inventory, err := fusionrackv1.NewTrayClient(agent).GetInventory(
		ctx, &fusionrackv1.GetInventoryRequest{})
	emit("Tray.GetInventory", inventory, err)

	// Through the fabric: from the first tray's first accelerator into the last tray's.
	memory := fusionrackv1.NewMemoryClient(agent)
	initiator, target := first.Accelerators[0].Index, last.Accelerators[0].Index
	stored, err := memory.Store(ctx, &fusionrackv1.StoreRequest{
		Initiator: initiator,
		Address:   unicast(target, 0x1000),
		Data:      []byte("written by a Go client"),
	})
	emit("Memory.Store", stored, err)
	loaded, err := memory.Load(ctx, &fusionrackv1.LoadRequest{
		Initiator: initiator,
		Address:   unicast(target, 0x1000),
		Size:      uint32(len("written by a Go client")),
	})
	emit("Memory.Load", loaded, err)
	refused, err := memory.Load(ctx, &fusionrackv1.LoadRequest{
		Initiator: initiator,
		Address:   unicast(target, 0x1000),
		Size:      0,
	})
	emit("Memory.Load", refused, err)
}
