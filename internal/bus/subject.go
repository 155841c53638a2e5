package bus

import (
	"strings"

	"github.com/oklog/ulid/v2"
)

// Subject joins parts under the configured prefix: Subject("block", "ready", ">") is
// "blockflow.block.ready.>". Parts are used as given (wildcards stay wildcards); pass
// names from outside through SubjectToken.
func (b *Bus) Subject(parts ...string) string {
	return b.prefix + "." + strings.Join(parts, ".")
}

// EventFilter is the filter subject for one event kind from every site: a
// ConsumerSpec.FilterSubjects entry on StreamEvents.
func (b *Bus) EventFilter(event string) string {
	return b.Subject("block", SubjectToken(event), ">")
}

// JobFilter is the filter subject for one job kind of every group, on StreamJobs.
func (b *Bus) JobFilter(kind string) string {
	return b.Subject("job", SubjectToken(kind), ">")
}

// SubjectToken makes s safe as one subject token: '.', '*', '>' and white space become
// '_', and an empty string becomes "_".
func SubjectToken(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return '_'
		}
		return r
	}, s)
}

// eventSubject is what Run reads back from a subject for its log fields.
type eventSubject struct {
	site  string
	block string // a valid ULID, or empty
}

// parseSubject understands <prefix>.block.<event>.<site>.<ulid>; other subjects give zero.
func (b *Bus) parseSubject(subject string) eventSubject {
	rest, ok := strings.CutPrefix(subject, b.prefix+".block.")
	if !ok {
		return eventSubject{}
	}
	tokens := strings.Split(rest, ".")
	if len(tokens) != 3 {
		return eventSubject{}
	}
	if _, err := ulid.ParseStrict(tokens[2]); err != nil {
		return eventSubject{site: tokens[1]}
	}
	return eventSubject{site: tokens[1], block: tokens[2]}
}

// lastToken is the subject's last token: the block ULID of an event, the group of a job.
func lastToken(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}
