// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Owned} from "./Owned.sol";
import {IAIConfig, IWorkerRegistry} from "./IAIConfig.sol";

/// @title JobRegistry (lcw devnet)
/// @notice Sessions, jobs, escrow, disputes, releases and worker balances with the upstream ABI
/// (same functions, events with the same `indexed` flags, custom errors, JobState order and Job /
/// Session struct field order). Decisions the upstream reference leaves open are listed in
/// contracts/README.md.
contract JobRegistry is Owned {
    // ------------------------------------------------------------------------------------ errors
    error DeadlineExceeded(uint256 jobId, uint256 deadline, uint256 currentTime);
    error DisputeResolutionNotTimedOut(uint256 jobId, uint256 deadline, uint256 currentTime);
    error DisputeWindowExpired(uint256 jobId, uint256 windowEnd, uint256 currentTime);
    error DisputeWindowNotElapsed(uint256 jobId, uint256 windowEnd, uint256 currentTime);
    error NoFaultWindowNotReached(uint256 jobId, uint256 availableAt, uint256 currentTime);
    error NotTimedOut(uint256 jobId, uint256 deadline, uint256 currentTime);
    error SignatureExpired(uint256 expiry, uint256 currentTime);
    error JobNotFound(uint256 jobId);
    error JobNotInState(uint256 jobId, uint8 expected, uint8 actual);
    error NotJobWorker(uint256 jobId, address caller, address worker);
    error SessionNotActive(uint256 sessionId);
    error SessionNotFound(uint256 sessionId);
    error NotSessionOwner(uint256 sessionId, address caller, address owner);
    error ModelDisabled(bytes32 modelId);
    error WorkerNotEligible(address worker, bytes32 modelId);
    error InsufficientBalance(address user, uint256 required, uint256 available);
    error InsufficientDisputeBond(uint256 required, uint256 provided);
    error InsufficientFee(uint256 required, uint256 provided);
    error NoBalanceToWithdraw(address worker);
    error NoPendingRefund(address account);
    error EtherTransferFailed();
    error ZeroDeposit();
    error InvalidDispatcherSignature();
    error InvalidResponseCiphertextHash();
    error InvalidSessionKey();
    error NotDisputer(address caller, address expected);
    error UnauthorizedDisputeCaller(uint256 jobId, address caller);
    error ZeroAddress();
    error ECDSAInvalidSignature();
    error ECDSAInvalidSignatureLength(uint256 length);
    error ECDSAInvalidSignatureS(bytes32 s);
    error EnforcedPause();
    error ExpectedPause();
    error ReentrancyGuardReentrantCall();
    error NotSessionManager();
    error SortitionDisabled();
    // Declared for ABI parity with upstream (paths the devnet does not implement, OZ/UUPS set): a
    // revert from the real network decodes with the same bindings.
    error NoBlobMismatch(uint256 jobId);
    error SessionNotReassigning(uint256 sessionId);
    error MaxReassignmentsExceeded(uint256 sessionId, uint256 max);
    error NoAvailableWorker(bytes32 modelId);
    error InsufficientDelegateAllowance(address user, address delegate, uint256 required, uint256 available);
    error UnexpectedETH();
    error InvalidWorkerSignature();
    error NotAuthorizedDelegate(address user, address delegate);
    error NotGuardianOrOwner(address caller);
    error GuardianAlreadySunset();
    error AddressEmptyCode(address target);
    error ERC1967InvalidImplementation(address implementation);
    error ERC1967NonPayable();
    error FailedCall();
    error InvalidInitialization();
    error NotInitializing();
    error UUPSUnauthorizedCallContext();
    error UUPSUnsupportedProxiableUUID(bytes32 slot);

    // ------------------------------------------------------------------------------------ events
    event JobSubmitted(uint256 indexed jobId, uint256 indexed sessionId, address worker);
    event JobAcknowledged(uint256 indexed jobId, address indexed worker);
    event JobCompleted(
        uint256 indexed jobId, address indexed worker, bytes32 responseBlobHash, bytes32 responseCiphertextHash
    );
    event JobReleased(uint256 indexed jobId, uint256 workerShare, uint256 protocolShare, uint256 feePoolShare);
    event FeeDistributed(uint256 indexed jobId, uint256 workerShare, uint256 protocolShare, uint256 feePoolShare);
    event JobTimedOut(uint256 indexed jobId, address indexed worker, uint256 slashAmount);
    event JobSettledNoFault(uint256 indexed jobId, uint256 refundAmount);
    event KeeperBountyPaid(uint256 indexed jobId, address indexed keeper, uint256 amount, uint8 kind);
    event DisputeCreated(uint256 indexed jobId, address indexed disputer);
    event DisputeResolved(uint256 indexed jobId, bool workerGuilty, uint256 similarityScore);
    event DisputeDefaulted(uint256 indexed jobId);
    event WorkerWithdrawal(address indexed worker, uint256 amount);
    event SessionCreated(
        uint256 indexed sessionId,
        address indexed user,
        bytes32 indexed modelId,
        address worker,
        bytes encWorkerKey,
        bytes encDisputerKey
    );
    event SessionAdopted(uint256 indexed sessionId, address indexed user, address indexed worker);
    event SessionClosed(uint256 indexed sessionId);
    event SessionKeyUpdated(uint256 indexed sessionId, bytes encWorkerKey, bytes encDisputerKey);
    event SessionReassigned(uint256 indexed sessionId, address newWorker);
    event Deposited(address indexed user, uint256 amount, uint256 newBalance);
    event Withdrew(address indexed user, uint256 amount, uint256 newBalance);
    event RefundClaimed(address indexed recipient, uint256 amount);
    event RefundCreditedToBalance(address indexed user, uint256 indexed jobId, uint256 amount);
    event RefundEscrowed(address indexed recipient, uint256 amount);
    event TransferFailed(address indexed to, uint256 amount);
    event Paused(address account);
    event Unpaused(address account);
    event DelegateAuthorizationSet(address indexed user, address indexed delegate, bool authorized);
    // Declared for ABI parity with upstream; the devnet never emits them.
    event DelegateAllowanceSet(address indexed user, address indexed delegate, uint256 allowance);
    event ReputationRegistryUpdated(address registry);
    event GuardianUpdated(address indexed oldGuardian, address indexed newGuardian);
    event Upgraded(address indexed implementation);
    event Initialized(uint64 version);

    // ------------------------------------------------------------------------------------ types
    enum JobState {
        Submitted,
        Acknowledged,
        Completed,
        TimedOut,
        Disputed,
        Resolved,
        Released
    }

    enum SessionStatus {
        Active,
        Reassigning,
        Closed
    }

    /// @notice Returned by getJob, in upstream field order.
    struct Job {
        uint256 sessionId;
        address worker;
        uint8 state;
        uint256 escrowedFee;
        bytes32 promptBlobHash;
        bytes32 responseBlobHash;
        uint256 submittedAt;
        uint256 ackTimestamp;
        uint256 completedAt;
        uint256 deadline;
        address disputeFiler;
        uint256 disputeBond;
        bytes32 reExecutionBlobHash;
        uint256 similarityScore;
        uint256 disputeCreatedAt;
        bytes32 responseCiphertextHash;
        uint256 submitBlockNumber;
        uint256 completionBlockNumber;
    }

    /// @notice Returned by getSession, in upstream field order.
    struct Session {
        address user;
        bytes32 modelId;
        address worker;
        uint8 status;
        bytes encWorkerKey;
        bytes encDisputerKey;
        uint256 jobCount;
        uint256 lastActivityAt;
        uint256 reassignCount;
        uint256 deposit;
        address[] excludedWorkers;
    }

    /// @dev Packed storage form of Job (5 slots of scalars + 4 hashes).
    struct JobData {
        uint64 sessionId;
        address worker;
        JobState state;
        uint128 escrowedFee;
        uint64 submittedAt;
        uint64 ackTimestamp;
        uint64 completedAt;
        uint64 deadline;
        uint64 disputeCreatedAt;
        uint64 submitBlockNumber;
        uint64 completionBlockNumber;
        address disputeFiler;
        uint128 disputeBond;
        uint128 similarityScore;
        bytes32 promptBlobHash;
        bytes32 responseBlobHash;
        bytes32 reExecutionBlobHash;
        bytes32 responseCiphertextHash;
    }

    uint256 private constant BPS = 10_000;
    uint8 private constant BOUNTY_RELEASE = 0;
    uint8 private constant BOUNTY_TIMEOUT = 1;
    bytes32 private constant CREATE_SESSION_TYPE = keccak256("lcw.createSession");
    bytes32 private constant UPDATE_KEY_TYPE = keccak256("lcw.updateSessionKey");
    uint256 private constant SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    uint256 private constant P256_WRAP_LEN = 125;
    uint256 private constant X25519_WRAP_LEN = 92;

    IWorkerRegistry public immutable workerRegistry;
    IAIConfig public immutable aiConfig;
    address public immutable treasury;
    address public immutable feePool;

    bool public paused;
    uint256 private locked = 1;
    uint256 public jobCount;
    uint256 public sessionCount;
    uint256 public protocolFees;
    uint256 public feePoolFees;

    mapping(uint256 => JobData) private jobs;
    mapping(uint256 => Session) private sessions;
    mapping(address => uint256) private balances;
    mapping(address => uint256) private prepaid;
    mapping(address => uint256) private refunds;
    mapping(address => uint256) private nonces;
    mapping(address => mapping(address => bool)) private delegates;

    constructor(address initialOwner, address workerRegistry_, address aiConfig_, address treasury_, address feePool_)
        Owned(initialOwner)
    {
        if (workerRegistry_ == address(0) || aiConfig_ == address(0)) revert ZeroAddress();
        if (treasury_ == address(0) || feePool_ == address(0)) revert ZeroAddress();
        workerRegistry = IWorkerRegistry(workerRegistry_);
        aiConfig = IAIConfig(aiConfig_);
        treasury = treasury_;
        feePool = feePool_;
    }

    modifier whenNotPaused() {
        if (paused) revert EnforcedPause();
        _;
    }

    modifier nonReentrant() {
        if (locked != 1) revert ReentrancyGuardReentrantCall();
        locked = 2;
        _;
        locked = 1;
    }

    // ------------------------------------------------------------------------------------ sessions

    /// @notice Opens a session with `worker` for `modelId`. The dispatcher signs the choice (see
    /// contracts/README.md for the digest); `msg.value` is credited to the caller's prepaid balance.
    function createSession(
        bytes32 modelId,
        address worker,
        bytes calldata encWorkerKey,
        bytes calldata encDisputerKey,
        bytes calldata dispatcherSignature,
        uint256 expiry
    ) external payable whenNotPaused returns (uint256 sessionId) {
        if (block.timestamp > expiry) revert SignatureExpired(expiry, block.timestamp);
        bytes32 digest = keccak256(
            abi.encode(
                CREATE_SESSION_TYPE,
                block.chainid,
                address(this),
                msg.sender,
                modelId,
                worker,
                keccak256(encWorkerKey),
                keccak256(encDisputerKey),
                nonces[msg.sender],
                expiry
            )
        );
        _checkDispatcher(digest, dispatcherSignature);
        nonces[msg.sender] += 1;
        sessionId = _openSession(msg.sender, modelId, worker, encWorkerKey, encDisputerKey);
        sessions[sessionId].deposit = msg.value;
        emit SessionCreated(sessionId, msg.sender, modelId, worker, encWorkerKey, encDisputerKey);
        if (msg.value > 0) _credit(msg.sender, msg.value);
    }

    /// @notice Opens the session a sortition request was claimed for: called by the SessionManager
    /// (AIConfig.getSessionManagerAddress) when the requester provides the wrapped keys. Emits
    /// SessionAdopted only; the keys are read with getSession.
    function adoptSession(
        address user,
        bytes32 modelId,
        address worker,
        bytes calldata encWorkerKey,
        bytes calldata encDisputerKey
    ) external whenNotPaused returns (uint256 sessionId) {
        if (msg.sender != aiConfig.getSessionManagerAddress()) revert NotSessionManager();
        if (!aiConfig.getSortitionEnabled()) revert SortitionDisabled();
        if (user == address(0)) revert ZeroAddress();
        sessionId = _openSession(user, modelId, worker, encWorkerKey, encDisputerKey);
        emit SessionAdopted(sessionId, user, worker);
    }

    function _openSession(
        address user,
        bytes32 modelId,
        address worker,
        bytes calldata encWorkerKey,
        bytes calldata encDisputerKey
    ) private returns (uint256 sessionId) {
        if (!aiConfig.isModelEnabled(modelId)) revert ModelDisabled(modelId);
        if (!workerRegistry.isEligible(worker, modelId)) revert WorkerNotEligible(worker, modelId);
        _checkWrappedKeys(worker, encWorkerKey, encDisputerKey);
        sessionId = ++sessionCount;
        Session storage s = sessions[sessionId];
        s.user = user;
        s.modelId = modelId;
        s.worker = worker;
        s.status = uint8(SessionStatus.Active);
        s.encWorkerKey = encWorkerKey;
        s.encDisputerKey = encDisputerKey;
        s.lastActivityAt = block.timestamp;
    }

    /// @notice Replaces the wrapped session keys (key rotation); dispatcher-signed like createSession.
    function updateSessionKey(
        uint256 sessionId,
        bytes calldata encWorkerKey,
        bytes calldata encDisputerKey,
        bytes calldata dispatcherSignature,
        uint256 expiry
    ) external whenNotPaused {
        Session storage s = _ownedSession(sessionId);
        if (s.status != uint8(SessionStatus.Active)) revert SessionNotActive(sessionId);
        if (block.timestamp > expiry) revert SignatureExpired(expiry, block.timestamp);
        _checkWrappedKeys(s.worker, encWorkerKey, encDisputerKey);
        bytes32 digest = keccak256(
            abi.encode(
                UPDATE_KEY_TYPE,
                block.chainid,
                address(this),
                msg.sender,
                sessionId,
                keccak256(encWorkerKey),
                keccak256(encDisputerKey),
                nonces[msg.sender],
                expiry
            )
        );
        _checkDispatcher(digest, dispatcherSignature);
        nonces[msg.sender] += 1;
        s.encWorkerKey = encWorkerKey;
        s.encDisputerKey = encDisputerKey;
        s.lastActivityAt = block.timestamp;
        emit SessionKeyUpdated(sessionId, encWorkerKey, encDisputerKey);
    }

    function closeSession(uint256 sessionId) external {
        Session storage s = _ownedSession(sessionId);
        if (s.status == uint8(SessionStatus.Closed)) revert SessionNotActive(sessionId);
        s.status = uint8(SessionStatus.Closed);
        s.lastActivityAt = block.timestamp;
        emit SessionClosed(sessionId);
    }

    function getSession(uint256 sessionId) external view returns (Session memory) {
        if (sessionId == 0 || sessionId > sessionCount) revert SessionNotFound(sessionId);
        return sessions[sessionId];
    }

    // ------------------------------------------------------------------------------------ jobs

    /// @notice Submits a job whose encrypted prompt travels in the blob with `blobHash`. The fee is
    /// taken from `msg.value` when sent (any excess is credited to the prepaid balance), otherwise
    /// from the caller's prepaid balance.
    function submitJob(uint256 sessionId, bytes32 blobHash) external payable whenNotPaused returns (uint256 jobId) {
        Session storage s = _ownedSession(sessionId);
        if (s.status != uint8(SessionStatus.Active)) revert SessionNotActive(sessionId);
        bytes32 modelId = s.modelId;
        if (!aiConfig.isModelEnabled(modelId)) revert ModelDisabled(modelId);
        address worker = s.worker;
        if (!workerRegistry.isEligible(worker, modelId)) revert WorkerNotEligible(worker, modelId);
        uint256 fee = aiConfig.calculateJobFee(modelId);
        if (msg.value > 0) {
            if (msg.value < fee) revert InsufficientFee(fee, msg.value);
            if (msg.value > fee) _credit(msg.sender, msg.value - fee);
        } else {
            uint256 available = prepaid[msg.sender];
            if (available < fee) revert InsufficientBalance(msg.sender, fee, available);
            prepaid[msg.sender] = available - fee;
        }

        jobId = ++jobCount;
        JobData storage j = jobs[jobId];
        j.sessionId = uint64(sessionId);
        j.worker = worker;
        j.state = JobState.Submitted;
        j.escrowedFee = uint128(fee);
        j.submittedAt = uint64(block.timestamp);
        j.deadline = uint64(block.timestamp + aiConfig.getAckTimeout());
        j.submitBlockNumber = uint64(block.number);
        j.promptBlobHash = blobHash;
        s.jobCount += 1;
        s.lastActivityAt = block.timestamp;
        workerRegistry.incrementActiveJobs(worker, modelId);
        emit JobSubmitted(jobId, sessionId, worker);
    }

    function acknowledgeJob(uint256 jobId) external whenNotPaused {
        JobData storage j = _workerJob(jobId, JobState.Submitted);
        j.state = JobState.Acknowledged;
        j.ackTimestamp = uint64(block.timestamp);
        j.deadline = uint64(block.timestamp + aiConfig.getCompletionTimeout());
        emit JobAcknowledged(jobId, msg.sender);
    }

    function completeJob(uint256 jobId, bytes32 responseBlobHash, bytes32 responseCiphertextHash)
        external
        whenNotPaused
    {
        JobData storage j = _workerJob(jobId, JobState.Acknowledged);
        if (responseCiphertextHash == bytes32(0)) revert InvalidResponseCiphertextHash();
        j.state = JobState.Completed;
        j.completedAt = uint64(block.timestamp);
        j.completionBlockNumber = uint64(block.number);
        j.responseBlobHash = responseBlobHash;
        j.responseCiphertextHash = responseCiphertextHash;
        emit JobCompleted(jobId, msg.sender, responseBlobHash, responseCiphertextHash);
    }

    function getJob(uint256 jobId) external view returns (Job memory job) {
        JobData storage j = _job(jobId);
        job.sessionId = j.sessionId;
        job.worker = j.worker;
        job.state = uint8(j.state);
        job.escrowedFee = j.escrowedFee;
        job.promptBlobHash = j.promptBlobHash;
        job.responseBlobHash = j.responseBlobHash;
        job.submittedAt = j.submittedAt;
        job.ackTimestamp = j.ackTimestamp;
        job.completedAt = j.completedAt;
        job.deadline = j.deadline;
        job.disputeFiler = j.disputeFiler;
        job.disputeBond = j.disputeBond;
        job.reExecutionBlobHash = j.reExecutionBlobHash;
        job.similarityScore = j.similarityScore;
        job.disputeCreatedAt = j.disputeCreatedAt;
        job.responseCiphertextHash = j.responseCiphertextHash;
        job.submitBlockNumber = j.submitBlockNumber;
        job.completionBlockNumber = j.completionBlockNumber;
    }

    // ------------------------------------------------------------------------------------ release

    /// @notice Releases one job: Completed once `completedAt + getDisputeWindow()` has passed,
    /// Resolved not guilty at once, Disputed once the resolution timeout has passed (the dispute
    /// defaults). Permissionless; a caller other than the worker earns releaseBountyBps of the fee.
    function releaseJob(uint256 jobId) external whenNotPaused nonReentrant {
        uint256 bounty = _release(jobId, aiConfig.getDisputeWindow(), aiConfig.getReleaseBountyBps());
        _pay(msg.sender, bounty);
    }

    /// @notice Releases every job in `jobIds`, all or nothing: one job that cannot be released
    /// reverts the whole batch with that job's error.
    function releaseJobs(uint256[] calldata jobIds) external whenNotPaused nonReentrant {
        uint256 window = aiConfig.getDisputeWindow();
        uint256 bountyBps = aiConfig.getReleaseBountyBps();
        uint256 bounty;
        for (uint256 i = 0; i < jobIds.length; i++) {
            bounty += _release(jobIds[i], window, bountyBps);
        }
        _pay(msg.sender, bounty);
    }

    // ------------------------------------------------------------------------------------ timeouts

    /// @notice Times out a job past its deadline (not acknowledged, or acknowledged but not
    /// completed): slashes the worker, refunds the consumer's prepaid balance, and pays a caller
    /// other than the worker timeoutBountyBps of the slash.
    function claimTimeout(uint256 jobId) external whenNotPaused nonReentrant {
        JobData storage j = _job(jobId);
        JobState st = j.state;
        if (st != JobState.Submitted && st != JobState.Acknowledged) {
            revert JobNotInState(jobId, uint8(JobState.Acknowledged), uint8(st));
        }
        if (block.timestamp <= j.deadline) revert NotTimedOut(jobId, j.deadline, block.timestamp);
        Session storage s = sessions[j.sessionId];
        if (s.status != uint8(SessionStatus.Active)) revert SessionNotActive(j.sessionId);
        uint256 bps = st == JobState.Submitted ? aiConfig.getTimeoutSlashBps() : aiConfig.getCompletionTimeoutSlashBps();
        address worker = j.worker;
        address recipient = msg.sender == worker ? address(0) : msg.sender;
        (uint256 slashAmount, uint256 bounty) = workerRegistry.slashWithBounty(worker, bps, recipient);
        _refundEscrow(j, jobId, s.user);
        j.state = JobState.TimedOut;
        workerRegistry.decrementActiveJobs(worker, s.modelId);
        emit JobTimedOut(jobId, worker, slashAmount);
        if (bounty > 0) emit KeeperBountyPaid(jobId, msg.sender, bounty, BOUNTY_TIMEOUT);
    }

    /// @notice Settles without fault a job that can no longer complete because its session was
    /// closed: available once the job's deadline has passed; refunds the consumer, no slash.
    function settleStuckJob(uint256 jobId) external whenNotPaused {
        JobData storage j = _job(jobId);
        JobState st = j.state;
        if (st != JobState.Submitted && st != JobState.Acknowledged) {
            revert JobNotInState(jobId, uint8(JobState.Acknowledged), uint8(st));
        }
        Session storage s = sessions[j.sessionId];
        if (s.status == uint8(SessionStatus.Active)) revert SessionNotActive(j.sessionId);
        uint256 availableAt = uint256(j.deadline) + 1;
        if (block.timestamp < availableAt) revert NoFaultWindowNotReached(jobId, availableAt, block.timestamp);
        uint256 refund = j.escrowedFee;
        _refundEscrow(j, jobId, s.user);
        j.state = JobState.TimedOut;
        workerRegistry.decrementActiveJobs(j.worker, s.modelId);
        emit JobSettledNoFault(jobId, refund);
    }

    // ------------------------------------------------------------------------------------ disputes

    /// @notice Disputes a completed job inside its dispute window; only the session's user or the
    /// disputer may, with a bond of escrowedFee * disputeBondMultiplier.
    function disputeJob(uint256 jobId) external payable whenNotPaused {
        JobData storage j = _job(jobId);
        if (j.state != JobState.Completed) revert JobNotInState(jobId, uint8(JobState.Completed), uint8(j.state));
        uint256 windowEnd = uint256(j.completedAt) + aiConfig.getDisputeWindow();
        if (block.timestamp >= windowEnd) revert DisputeWindowExpired(jobId, windowEnd, block.timestamp);
        if (msg.sender != sessions[j.sessionId].user && msg.sender != aiConfig.getDisputerAddress()) {
            revert UnauthorizedDisputeCaller(jobId, msg.sender);
        }
        uint256 bond = uint256(j.escrowedFee) * aiConfig.getDisputeBondMultiplier();
        if (msg.value < bond) revert InsufficientDisputeBond(bond, msg.value);
        j.state = JobState.Disputed;
        j.disputeFiler = msg.sender;
        j.disputeBond = uint128(msg.value);
        j.disputeCreatedAt = uint64(block.timestamp);
        emit DisputeCreated(jobId, msg.sender);
    }

    /// @notice The disputer's verdict. Guilty: the worker is slashed disputeSlashBps, the fee is
    /// refunded to the consumer, the bond is escrowed back to the filer and the job is terminal.
    /// Not guilty: the bond goes to the protocol and the job becomes releasable at once.
    function resolveDispute(uint256 jobId, bool workerGuilty, bytes32 reExecutionBlobHash, uint256 _similarityScore)
        external
        whenNotPaused
    {
        address disputer = aiConfig.getDisputerAddress();
        if (msg.sender != disputer) revert NotDisputer(msg.sender, disputer);
        JobData storage j = _job(jobId);
        if (j.state != JobState.Disputed) revert JobNotInState(jobId, uint8(JobState.Disputed), uint8(j.state));
        j.state = JobState.Resolved;
        j.reExecutionBlobHash = reExecutionBlobHash;
        j.similarityScore = uint128(_similarityScore);
        uint256 bond = j.disputeBond;
        if (workerGuilty) {
            Session storage s = sessions[j.sessionId];
            workerRegistry.slash(j.worker, aiConfig.getDisputeSlashBps());
            _refundEscrow(j, jobId, s.user);
            _escrowRefund(j.disputeFiler, bond);
            workerRegistry.decrementActiveJobs(j.worker, s.modelId);
        } else {
            protocolFees += bond;
        }
        emit DisputeResolved(jobId, workerGuilty, _similarityScore);
    }

    // ------------------------------------------------------------------------------------ balances

    function withdraw() external nonReentrant {
        uint256 amount = balances[msg.sender];
        if (amount == 0) revert NoBalanceToWithdraw(msg.sender);
        balances[msg.sender] = 0;
        emit WorkerWithdrawal(msg.sender, amount);
        _pay(msg.sender, amount);
    }

    function workerBalance(address worker) external view returns (uint256) {
        return balances[worker];
    }

    /// @notice The consumer nonce the dispatcher signs over (one use per createSession / updateSessionKey).
    function nonce(address account) external view returns (uint256) {
        return nonces[account];
    }

    function deposit() external payable {
        if (msg.value == 0) revert ZeroDeposit();
        _credit(msg.sender, msg.value);
    }

    function withdrawBalance(uint256 amount) external nonReentrant {
        uint256 available = prepaid[msg.sender];
        if (amount == 0) revert ZeroDeposit();
        if (available < amount) revert InsufficientBalance(msg.sender, amount, available);
        prepaid[msg.sender] = available - amount;
        emit Withdrew(msg.sender, amount, available - amount);
        _pay(msg.sender, amount);
    }

    function prepaidBalanceOf(address user) external view returns (uint256) {
        return prepaid[user];
    }

    /// @notice Lets `delegate` act for the caller where upstream allows a delegate (on the devnet:
    /// SessionManager's requestSessionFor and provideSessionKeyFor).
    function setDelegateAuthorization(address delegate, bool authorized) external {
        if (delegate == address(0)) revert ZeroAddress();
        delegates[msg.sender][delegate] = authorized;
        emit DelegateAuthorizationSet(msg.sender, delegate, authorized);
    }

    function isDelegateAuthorized(address user, address delegate) external view returns (bool) {
        return delegates[user][delegate];
    }

    function claimRefund() external nonReentrant {
        uint256 amount = refunds[msg.sender];
        if (amount == 0) revert NoPendingRefund(msg.sender);
        refunds[msg.sender] = 0;
        emit RefundClaimed(msg.sender, amount);
        _pay(msg.sender, amount);
    }

    function pendingRefund(address account) external view returns (uint256) {
        return refunds[account];
    }

    // ------------------------------------------------------------------------------------ admin

    function pause() external onlyOwner {
        if (paused) revert EnforcedPause();
        paused = true;
        emit Paused(msg.sender);
    }

    function unpause() external onlyOwner {
        if (!paused) revert ExpectedPause();
        paused = false;
        emit Unpaused(msg.sender);
    }

    // ------------------------------------------------------------------------------------ internals

    function _release(uint256 jobId, uint256 window, uint256 bountyBps) private returns (uint256 bounty) {
        JobData storage j = _job(jobId);
        JobState st = j.state;
        if (st == JobState.Completed) {
            uint256 windowEnd = uint256(j.completedAt) + window;
            if (block.timestamp < windowEnd) revert DisputeWindowNotElapsed(jobId, windowEnd, block.timestamp);
        } else if (st == JobState.Disputed) {
            uint256 end = uint256(j.disputeCreatedAt) + aiConfig.getResolutionTimeout();
            if (block.timestamp < end) revert DisputeResolutionNotTimedOut(jobId, end, block.timestamp);
            emit DisputeDefaulted(jobId);
            _escrowRefund(j.disputeFiler, j.disputeBond);
        } else if (st != JobState.Resolved || j.escrowedFee == 0) {
            revert JobNotInState(jobId, uint8(JobState.Completed), uint8(st));
        }
        uint256 fee = j.escrowedFee;
        uint256 workerShare = fee * aiConfig.getWorkerFeeBps() / BPS;
        uint256 protocolShare = fee * aiConfig.getProtocolFeeBps() / BPS;
        uint256 feePoolShare = fee - workerShare - protocolShare;
        address worker = j.worker;
        if (msg.sender != worker) {
            bounty = fee * bountyBps / BPS;
            if (bounty > workerShare) bounty = workerShare;
            workerShare -= bounty;
        }
        j.escrowedFee = 0;
        j.state = JobState.Released;
        balances[worker] += workerShare;
        protocolFees += protocolShare;
        feePoolFees += feePoolShare;
        workerRegistry.decrementActiveJobs(worker, sessions[j.sessionId].modelId);
        emit JobReleased(jobId, workerShare, protocolShare, feePoolShare);
        if (bounty > 0) emit KeeperBountyPaid(jobId, msg.sender, bounty, BOUNTY_RELEASE);
    }

    function _job(uint256 jobId) private view returns (JobData storage j) {
        if (jobId == 0 || jobId > jobCount) revert JobNotFound(jobId);
        j = jobs[jobId];
    }

    function _workerJob(uint256 jobId, JobState expected) private view returns (JobData storage j) {
        j = _job(jobId);
        if (j.state != expected) revert JobNotInState(jobId, uint8(expected), uint8(j.state));
        if (msg.sender != j.worker) revert NotJobWorker(jobId, msg.sender, j.worker);
        if (block.timestamp > j.deadline) revert DeadlineExceeded(jobId, j.deadline, block.timestamp);
    }

    function _ownedSession(uint256 sessionId) private view returns (Session storage s) {
        if (sessionId == 0 || sessionId > sessionCount) revert SessionNotFound(sessionId);
        s = sessions[sessionId];
        if (msg.sender != s.user) revert NotSessionOwner(sessionId, msg.sender, s.user);
    }

    /// @dev The worker wrap must match the worker's registered key type (125 bytes for P-256, 92
    /// for X25519); the disputer wrap may be either.
    function _checkWrappedKeys(address worker, bytes calldata encWorkerKey, bytes calldata encDisputerKey)
        private
        view
    {
        uint256 keyLen = workerRegistry.getWorkerEncryptionKey(worker).length;
        uint256 wrapLen = keyLen == 65 ? P256_WRAP_LEN : X25519_WRAP_LEN;
        if (encWorkerKey.length != wrapLen) revert InvalidSessionKey();
        if (encDisputerKey.length != P256_WRAP_LEN && encDisputerKey.length != X25519_WRAP_LEN) {
            revert InvalidSessionKey();
        }
    }

    function _checkDispatcher(bytes32 digest, bytes calldata signature) private view {
        bytes32 ethDigest = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", digest));
        if (_recover(ethDigest, signature) != aiConfig.getDispatcherAddress()) revert InvalidDispatcherSignature();
    }

    function _recover(bytes32 digest, bytes calldata sig) private pure returns (address signer) {
        if (sig.length != 65) revert ECDSAInvalidSignatureLength(sig.length);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        if (uint256(s) > SECP256K1_HALF_N) revert ECDSAInvalidSignatureS(s);
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert ECDSAInvalidSignature();
    }

    function _credit(address user, uint256 amount) private {
        uint256 balance = prepaid[user] + amount;
        prepaid[user] = balance;
        emit Deposited(user, amount, balance);
    }

    function _refundEscrow(JobData storage j, uint256 jobId, address user) private {
        uint256 amount = j.escrowedFee;
        j.escrowedFee = 0;
        prepaid[user] += amount;
        emit RefundCreditedToBalance(user, jobId, amount);
    }

    function _escrowRefund(address recipient, uint256 amount) private {
        if (amount == 0) return;
        refunds[recipient] += amount;
        emit RefundEscrowed(recipient, amount);
    }

    function _pay(address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert EtherTransferFailed();
    }
}
