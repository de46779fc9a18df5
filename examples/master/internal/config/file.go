package config

// File is the TOML document as written, before validation: the tables and
// keys that examples/master/README.md documents. Durations and address
// lists keep their raw TOML value (see Duration and Strings) so that every
// problem is reported at once instead of the decoder's first.
type File struct {
	Master       Master        `toml:"master"`
	Mail         *Mail         `toml:"mail"`
	Slaves       []SlaveEntry  `toml:"slaves"`
	LatentSlaves []LatentEntry `toml:"latent_slaves"`
	Builders     []Builder     `toml:"builders"`
	Schedulers   []Scheduler   `toml:"schedulers"`
	Cluster      *ClusterTable `toml:"cluster"`
}

// Master is the [master] table: where the master listens and the settings
// of the slave manager and the latent lifecycle.
type Master struct {
	Listen               string   `toml:"listen"`
	ListenMsgpack        string   `toml:"listen_msgpack"`
	HTTP                 string   `toml:"http"`
	MasterID             string   `toml:"master_id"`
	LogFormat            string   `toml:"log_format"`
	TLSCert              string   `toml:"tls_cert"`
	TLSKey               string   `toml:"tls_key"`
	Basedir              string   `toml:"basedir"`
	MaxStarting          int      `toml:"max_starting"`
	MaxRunning           int      `toml:"max_running"`
	ReapInterval         Duration `toml:"reap_interval"`
	CheckInterval        Duration `toml:"check_interval"`
	StopTimeout          Duration `toml:"stop_timeout"`
	KeepaliveTimeout     Duration `toml:"keepalive_timeout"`
	DuplicatePingTimeout Duration `toml:"duplicate_ping_timeout"`
	AttachTimeout        Duration `toml:"attach_timeout"`
	MessageMemory        Size     `toml:"message_memory"`
	History              int      `toml:"history"`
	MaxUploadSize        Size     `toml:"max_upload_size"`
	MaxStepOutput        Size     `toml:"max_step_output"`
	MaxPrintedOutput     Size     `toml:"max_printed_output"`
	MaxQueuedBuilds      int      `toml:"max_queued_builds"`
	MaxReasonLength      int      `toml:"max_reason_length"`
	PageBuilds           int      `toml:"page_builds"`
	HTTPMaxBody          Size     `toml:"http_max_body"`
	HTTPTokenFile        string   `toml:"http_token_file"`
	HTTPBasicAuthFile    string   `toml:"http_basic_auth_file"`
	HTTPAuthBurst        int      `toml:"http_auth_burst"`
	// HTTPAllowUnauthenticated lets the web port listen beyond loopback
	// without authentication.
	HTTPAllowUnauthenticated bool     `toml:"http_allow_unauthenticated"`
	HTTPMaxConnections       int      `toml:"http_max_connections"`
	HTTPReadHeaderTimeout    Duration `toml:"http_read_header_timeout"`
	HTTPReadTimeout          Duration `toml:"http_read_timeout"`
	HTTPWriteTimeout         Duration `toml:"http_write_timeout"`
	HTTPIdleTimeout          Duration `toml:"http_idle_timeout"`
}

// Mail is the [mail] table: the seed's MailNotifier.
type Mail struct {
	FromAddr  string `toml:"fromaddr"`
	RelayHost string `toml:"relayhost"`
	Builders  any    `toml:"builders"` // refused: no build mail to filter
	Username  string `toml:"username"`
	Secret
	StartTLS bool     `toml:"starttls"`
	Timeout  Duration `toml:"timeout"`
}

// Secret is a password given in the file, in a file or in an environment
// variable: at most one of the three.
type Secret struct {
	Password     string `toml:"password"`
	PasswordFile string `toml:"password_file"`
	PasswordEnv  string `toml:"password_env"`
}

// SlaveEntry is one [[slaves]] table: the seed's BuildSlave.
type SlaveEntry struct {
	Name string `toml:"name"`
	Secret
	Properties        map[string]any `toml:"properties"`
	MaxBuilds         int            `toml:"max_builds"`
	KeepaliveInterval Duration       `toml:"keepalive_interval"`
	NotifyOnMissing   Strings        `toml:"notify_on_missing"`
	MissingTimeout    Duration       `toml:"missing_timeout"`
}

// LatentEntry is one [[latent_slaves]] table: a slave's options plus its
// driver's, in the sub-table that Kind names.
type LatentEntry struct {
	SlaveEntry
	Kind             string        `toml:"kind"`
	BuildWaitTimeout Duration      `toml:"build_wait_timeout"`
	Local            *LocalEntry   `toml:"local"`
	EC2              *EC2Entry     `toml:"ec2"`
	Libvirt          *LibvirtEntry `toml:"libvirt"`
	Docker           *DockerEntry  `toml:"docker"`
}

// LocalEntry is [latent_slaves.local]: a slave program run as a child
// process (package latent/local).
type LocalEntry struct {
	Program     string   `toml:"program"`
	Args        []string `toml:"args"`
	Basedir     string   `toml:"basedir"`
	Env         []string `toml:"env"`
	KillTimeout Duration `toml:"kill_timeout"`
}

// EC2Entry is [latent_slaves.ec2]: the options of package ec2, under the
// seed's names.
type EC2Entry struct {
	InstanceType          string            `toml:"instance_type"`
	AMI                   string            `toml:"ami"`
	ValidAMIOwners        []int64           `toml:"valid_ami_owners"`
	ValidAMILocationRegex string            `toml:"valid_ami_location_regex"`
	Identifier            string            `toml:"identifier"`
	SecretIdentifier      string            `toml:"secret_identifier"`
	SecretIdentifierFile  string            `toml:"secret_identifier_file"`
	SecretIdentifierEnv   string            `toml:"secret_identifier_env"`
	AWSIDFilePath         string            `toml:"aws_id_file_path"`
	ElasticIP             string            `toml:"elastic_ip"`
	KeypairName           string            `toml:"keypair_name"`
	SecurityName          string            `toml:"security_name"`
	Region                string            `toml:"region"`
	Endpoint              string            `toml:"endpoint"`
	SubnetID              string            `toml:"subnet_id"`
	SecurityGroupIDs      []string          `toml:"security_group_ids"`
	InstanceProfile       string            `toml:"instance_profile"`
	UserData              string            `toml:"user_data"`
	MasterAddress         string            `toml:"master_address"`
	Tags                  map[string]string `toml:"tags"`
	SpotInstance          bool              `toml:"spot_instance"`
	MaxSpotPrice          float64           `toml:"max_spot_price"`
	PollInterval          Duration          `toml:"poll_interval"`
	StopTimeout           Duration          `toml:"stop_timeout"`
	RetryMaxAttempts      int               `toml:"retry_max_attempts"`
	RetryMaxBackoff       Duration          `toml:"retry_max_backoff"`
	BlockDeviceMap        []BlockDevice     `toml:"block_device_map"`
}

// BlockDevice is one [[latent_slaves.ec2.block_device_map]] entry: an EBS
// volume, or with virtual_name an instance store volume.
type BlockDevice struct {
	DeviceName          string `toml:"device_name"`
	VirtualName         string `toml:"virtual_name"`
	VolumeSize          int32  `toml:"volume_size"` // GiB
	VolumeType          string `toml:"volume_type"`
	Iops                int32  `toml:"iops"`
	SnapshotID          string `toml:"snapshot_id"`
	Encrypted           bool   `toml:"encrypted"`
	DeleteOnTermination *bool  `toml:"delete_on_termination"` // default true
}

// LibvirtEntry is [latent_slaves.libvirt]: the options of package libvirt,
// under the seed's names.
type LibvirtEntry struct {
	HDImage         string   `toml:"hd_image"`
	BaseImage       string   `toml:"base_image"`
	XML             string   `toml:"xml"`
	XMLFile         string   `toml:"xml_file"`
	URI             string   `toml:"uri"`
	Socket          string   `toml:"socket"`
	GuestEnv        []string `toml:"guest_env"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
}

// DockerEntry is [latent_slaves.docker]: the options of package docker,
// under the names of Buildbot's DockerLatentWorker.
type DockerEntry struct {
	DockerHost        string            `toml:"docker_host"`
	TLS               *DockerTLS        `toml:"tls"`
	Image             string            `toml:"image"`
	Command           []string          `toml:"command"`
	Volumes           []string          `toml:"volumes"`
	Dockerfile        string            `toml:"dockerfile"`
	CustomContext     bool              `toml:"custom_context"`
	Encoding          string            `toml:"encoding"`
	BuildArgs         map[string]string `toml:"buildargs"`
	Target            string            `toml:"target"`
	Version           string            `toml:"version"`
	FollowStartupLogs bool              `toml:"followStartupLogs"`
	MasterFQDN        string            `toml:"masterFQDN"`
	HostConfig        map[string]any    `toml:"hostconfig"`
	AllowPrivileged   bool              `toml:"allow_privileged"`
	AutoPull          bool              `toml:"autopull"`
	AlwaysPull        bool              `toml:"alwaysPull"`
	Hostname          string            `toml:"hostname"`
}

// DockerTLS is [latent_slaves.docker.tls]: docker-py's TLSConfig, the PEM
// files that reach a tcp:// docker_host over TLS.
type DockerTLS struct {
	CACert     string `toml:"ca_cert"`
	ClientCert string `toml:"client_cert"`
	ClientKey  string `toml:"client_key"`
}

// Builder is one [[builders]] table.
type Builder struct {
	Name   string   `toml:"name"`
	Slaves []string `toml:"slaves"`
	Steps  []Step   `toml:"steps"`
}

// Step is one [[builders.steps]] table: a shell step or an upload step.
type Step struct {
	Name          string            `toml:"name"`
	Shell         string            `toml:"shell"`
	Upload        string            `toml:"upload"`
	MaxUploadSize Size              `toml:"max_upload_size"`
	Env           map[string]string `toml:"env"`
	Timeout       Duration          `toml:"timeout"`
}

// Scheduler is one [[schedulers]] table.
type Scheduler struct {
	Builder  string   `toml:"builder"`
	Periodic Duration `toml:"periodic"`
	AtStart  bool     `toml:"at_start"`
}

// Duration is a duration key's raw TOML value; Validate parses it.
type Duration struct{ raw any }

// UnmarshalTOML keeps the raw value: it never fails, so that a bad
// duration is reported with every other problem.
func (d *Duration) UnmarshalTOML(v any) error { d.raw = v; return nil }

// Size is a size key's raw TOML value: bytes as an integer, or a string
// with a unit such as "64KiB" or "1GiB"; Validate parses it.
type Size struct{ raw any }

// UnmarshalTOML keeps the raw value, as Duration's does.
func (s *Size) UnmarshalTOML(v any) error { s.raw = v; return nil }

// Strings is a key that takes one string or a list of them, like the
// seed's notify_on_missing; Validate checks it.
type Strings struct{ raw any }

// UnmarshalTOML keeps the raw value, as Duration's does.
func (s *Strings) UnmarshalTOML(v any) error { s.raw = v; return nil }
