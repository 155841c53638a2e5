package block

import (
	"strconv"

	"github.com/prometheus/prometheus/model/labels"
)

// GroupKey is a block's compaction group as Thanos names it: "<resolution>@<hash of the
// external labels>".
func GroupKey(lset map[string]string, resolution int64) string {
	return strconv.FormatInt(resolution, 10) + "@" + strconv.FormatUint(labels.FromMap(lset).Hash(), 10)
}
