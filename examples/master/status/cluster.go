package status

import "time"

// Cluster is the cluster of masters as this one sees it, when it shares
// its fleet with others through etcd: the page's "Cluster" section and
// "cluster" in the JSON.
type Cluster struct {
	// Master is this master's id.
	Master string `json:"master"`
	// Leader is the id of the master that leads (stops dead masters'
	// instances, marks their builds lost); "" while none is elected.
	Leader   string           `json:"leader"`
	Masters  []ClusterMaster  `json:"masters"`
	Owners   []SlaveOwner     `json:"owners"`   // where each attached slave is, by slave name
	Requests []ClusterRequest `json:"requests"` // builds queued in etcd, claimed or lost
	// Error says what could not be read from etcd, if anything: the rest
	// is what could.
	Error string `json:"error,omitempty"`
}

// ClusterMaster is one live master.
type ClusterMaster struct {
	ID      string            `json:"id"`
	Addrs   map[string]string `json:"addrs,omitempty"` // protocol → host:port
	Started time.Time         `json:"started"`
	Leader  bool              `json:"leader,omitempty"`
	Self    bool              `json:"self,omitempty"` // this master
}

// SlaveOwner says which master holds an attached slave.
type SlaveOwner struct {
	Slave  string `json:"slave"`
	Master string `json:"master"`
}

// ClusterRequest is a build queued in etcd for the master that holds one
// of its slaves.
type ClusterRequest struct {
	ID        string    `json:"id"`
	Builder   string    `json:"builder"`
	State     string    `json:"state"` // queued, claimed, lost
	Reason    string    `json:"reason,omitempty"`
	Submitter string    `json:"submitter"`
	Submitted time.Time `json:"submitted"`
	Master    string    `json:"master,omitempty"` // the claimer
	Slave     string    `json:"slave,omitempty"`
	Lost      string    `json:"lost,omitempty"` // what happened to a lost one
}
