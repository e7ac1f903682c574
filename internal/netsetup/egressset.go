package netsetup

// EgressSet names the ipset of the addresses container id's egress
// resolver lets it reach (lodge run --egress-dns): lodge makes and removes
// it with the container's egress chain, the sandbox service's resolver
// adds to it ("" for an id too short to be a container's). ipset names
// take 31 characters.
func EgressSet(id string) string {
	if len(id) < 12 {
		return ""
	}
	return "lodge-eg-" + id[:12]
}
