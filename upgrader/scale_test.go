package upgrader

import "testing"

// A worker added by a scale is told the count the scale asked for, as
// BATON_WORKERS, like every worker a reload starts after it: 6 for each
// of the two a scale from 4 to 6 adds, not 5 for the first.
func TestScaledWorkersAreToldTheNewCount(t *testing.T) {
	s := up(t, workers(4, 0))
	c := s.scale(6)
	s.ready(105, 106)
	if res := result(t, c); res.Err != nil {
		t.Fatal(res.Err)
	}
	for _, st := range s.env.starts[4:] {
		if st.Workers != 6 {
			t.Errorf("worker %d added by a scale to 6 was told BATON_WORKERS=%d", st.Index, st.Workers)
		}
	}
}
