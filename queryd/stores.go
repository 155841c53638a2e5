package queryd

import (
	"encoding/json"
	"net/http"

	"github.com/blockflow/blockflow/internal/storeapi"
)

// unknownComponent groups the endpoints that never answered Info, so they show on
// /api/v1/stores (the Thanos Querier leaves them out).
const unknownComponent = "unknown"

// serveStores answers /api/v1/stores as the Thanos Querier does: the StoreAPI endpoints
// with their health, label sets and time ranges, grouped by component type.
func (s *Server) serveStores(w http.ResponseWriter, _ *http.Request) {
	groups := map[string][]storeapi.EndpointStatus{}
	for _, st := range s.Stores() {
		typ := st.ComponentType
		if typ == "" {
			typ = unknownComponent
		}
		groups[typ] = append(groups[typ], st)
	}
	body, err := json.Marshal(struct {
		Status string                               `json:"status"`
		Data   map[string][]storeapi.EndpointStatus `json:"data"`
	}{"success", groups})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(body); err != nil {
		s.log.Debug().Err(err).Msg("write /api/v1/stores")
	}
}
